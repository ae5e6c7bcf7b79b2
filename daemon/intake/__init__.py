"""Intake: the inbox watcher, manifest validation, acceptance and staging of a batch's episode folders.
Imports config, models, spool and stages; never core/."""
