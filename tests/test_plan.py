"""`podspool plan` against real dry runs, its JSON shape, and the pipeline model on cases worked by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from podspool.daemon.cli.plan import eta
from podspool.daemon.cli.plan_model import StageLoad, simulate
from podspool.daemon.config import Config
from podspool.daemon.models import EpisodeManifest, PhaseTiming
from podspool.daemon.ratelimit.window import Rate
from podspool_helpers import cli, write_manifest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.soak  # a daemon's whole run: .ci/run runs it with the soak tests, under their bound
def test_plan_matches_real_dry_runs() -> None:
    """The benchmark's two quick scenarios: the real daemon, measured from the batch's own summary."""
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "plan_bench.py"), "--quick", "--json"],
                         capture_output=True, text=True, timeout=120, check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert r["done"] == r["episodes"]
        assert r["calls_predicted"] == r["calls_measured"] == {"sim": 3 * r["episodes"]}
        assert r["cost_predicted"] == pytest.approx(r["cost_measured"], abs=1e-9)
        # the bench holds it to the judged 15%; a loaded CI machine gets a little more room
        assert abs(r["error_pct"]) <= 20, r
    assert rows[0]["bound_by"] == "research processes (1)"
    assert rows[1]["bound_by"].startswith("rate limit sim (10 per 1s)")


def test_plan_json_shape_and_figures(tmp_path: Path) -> None:
    cfg = tmp_path / "sim.toml"
    cfg.write_text('[research]\nprovider = "sim"\n[production]\nprovider = "sim"\n[audio]\nprovider = "sim"\n'
                   "[providers.sim]\nlatency_ms = 1000\ncost_per_call_usd = 0.25\n"
                   '[providers.sim.stage_latency_ms]\naudio = 4000\n')
    big = write_manifest(tmp_path / "big.json", {"batch_id": "big", "topics": [f"t{i}" for i in range(60)],
                                                 "budget_usd": 10})
    small = write_manifest(tmp_path / "small.json", {"topics": ["a", "b"]})
    out = cli("plan", str(big), str(small), "--config", str(cfg), "--json")
    assert out.returncode == 0, out.stderr
    b, s = json.loads(out.stdout)["batches"]
    assert {"batch_id", "episodes", "calls", "cost_usd", "duration_s", "bound_by"} <= set(b)
    assert (b["batch_id"], b["episodes"], b["strategy"]) == ("big", 60, "large_batch")
    assert b["calls"] == {"sim": 180}
    assert b["cost_usd"] == {"research": 15.0, "production": 15.0, "audio": 15.0, "total": 45.0}
    # large_batch: 2 audio processes at 4 s -> about 60 * 4 / 2 = 120 s, plus the pipeline's fill
    assert b["bound_by"] == "audio processes (2)"
    assert 120 <= b["duration_s"] <= 130
    assert any("budget $10.00" in n for n in b["notes"])
    assert s["batch_id"] is None and s["calls"] == {"sim": 6}
    text = cli("plan", str(big), "--config", str(cfg))
    assert "bound by:   audio processes (2)" in text.stdout and "total $45.0000" in text.stdout


def test_plan_of_the_offline_defaults_costs_nothing_and_calls_no_api() -> None:
    out = cli("plan", str(REPO / "examples" / "small_batch.json"), "--json", cwd=Path("/"))
    assert out.returncode == 0, out.stderr
    p = json.loads(out.stdout)["batches"][0]
    assert p["calls"] == {} and p["cost_usd"]["total"] == 0.0 and p["episodes"] == 10


def test_model_by_hand() -> None:
    one = [StageLoad("research", processes=1, calls=1, latency_s=1.0)]
    assert simulate(one, {}, session_cap=10, episodes=4) == pytest.approx(4.0)
    two = [StageLoad("research", processes=2, calls=1, latency_s=1.0)]
    assert simulate(two, {}, session_cap=10, episodes=4) == pytest.approx(2.0)
    assert simulate(two, {}, session_cap=1, episodes=4) == pytest.approx(4.0)  # one episode in flight at a time
    # 2 starts per 1 s window (+45 ms margin), 5 calls, no latency: starts at 0, 0, 1.045, 1.045, 2.09
    limited = [StageLoad("research", processes=5, calls=1, latency_s=0.0, api="x")]
    assert simulate(limited, {"x": Rate.of(2, 1.0)}, session_cap=10, episodes=5) == pytest.approx(2.09)


def test_eta_uses_what_the_batch_measured() -> None:
    cfg = Config.model_validate({"research": {"provider": "sim"}, "production": {"provider": "sim"},
                                 "audio": {"provider": "sim"}, "providers": {"sim": {"latency_ms": 100}},
                                 "concurrency": {"research": 1, "production": 1, "audio": 1},
                                 "plan": {"save_s": {}, "warmup_s": {}, "supervisor_s": 0, "handoff_s": 0}})
    cfg.concurrency_explicit = True

    def ep(n: int, loc: str, audio_s: float | None = None) -> tuple[str, EpisodeManifest]:
        m = EpisodeManifest(episode_number=n, session_id=f"ep_{n:03d}_b", batch_id="b", topic="t")
        if audio_s is not None:
            m.timings["audio"] = PhaseTiming(seconds=audio_s)
        return loc, m

    waiting = [ep(i, "audio") for i in range(3, 7)]
    planned = eta(waiting, None, cfg)
    assert planned and planned["eta_seconds"] == pytest.approx(0.4) and "plan" in planned["eta_from"]
    # audio turned out to take 2 s per episode: 4 waiting at one process is 8 s, not 0.4
    measured = eta([ep(1, "done", 2.0), ep(2, "done", 2.0), *waiting], None, cfg)
    assert measured and measured["eta_seconds"] == pytest.approx(8.0) and "audio" in measured["eta_from"]
    assert eta([ep(1, "done", 2.0)], None, cfg) is None
