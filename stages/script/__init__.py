"""The episode script: its format (owned here), the normaliser of a model's reply, and the quality gates.
Imports stages.base, stages.settings and stages.words."""
