"""Providers, one module each, chosen per stage by config: offline defaults, real HTTP APIs, and sim."""
