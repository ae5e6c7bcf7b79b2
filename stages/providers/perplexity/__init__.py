"""Perplexity research: its three APIs (agent, sonar, search) behind one provider.
Imports stages.providers.http and stages only."""
