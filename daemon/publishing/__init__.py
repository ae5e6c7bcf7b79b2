"""Finished episodes: the podcast feed, retention of what they keep, and the archive.
Reads done/ through the spool; imports config, models, spool and stages.publish."""
