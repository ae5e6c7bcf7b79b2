"""The dry-run configuration the benchmarks share: every stage on the `sim` provider, quiet stderr."""

from __future__ import annotations

SIM_STAGES = """
[research]
provider = "sim"
[production]
provider = "sim"
[audio]
provider = "sim"
"""
QUIET = """
[logging]
stderr = false
"""


def sim_config(providers_sim: str = "latency_ms = 0", extra: str = "", audio: str = "") -> str:
    """A full config: sim stages (with `audio` lines added under [audio]), [providers.sim], then `extra`."""
    stages = SIM_STAGES.replace('[audio]\nprovider = "sim"\n', f'[audio]\nprovider = "sim"\n{audio}')
    return f"{stages}[providers.sim]\n{providers_sim}\n{extra}{QUIET}"
