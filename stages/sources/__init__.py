"""An episode's sources: where they may come from (resolve.py) and their text cut into citable passages.
Imports stages.base and stages.settings."""
