"""OpenAI-compatible servers: the script writer (chat completions) and speech (audio/speech).
Imports stages.providers.http and stages only."""
