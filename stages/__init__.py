"""Episode stages: plain functions of (episode folder, episode input, context) -> StageResult.

Nothing in this package knows about the spool, the pools or the supervisor; the daemon imports
stages, never the other way round.
"""
