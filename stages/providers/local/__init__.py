"""The offline defaults: BM25 research over the episode's own sources, and the deterministic writer.
Imports stages only; no network."""
