"""An episode's sources: where they may come from (resolve.py, addresses.py), how a URL is fetched
(fetch.py), how each format becomes citable passages (documents.py, passages.py), how an episode's
sources are read once for every provider (library.py) and ranked against its question (rank.py).
Imports stages.base, stages.settings, stages.fsio and stages.providers.http (the retry policy)."""
