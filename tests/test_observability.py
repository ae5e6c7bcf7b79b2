"""Dashboard, metrics, timeline and webhook alerts after real dry-run batches through the real daemon."""

from __future__ import annotations

import json
import re
import threading
import xml.dom.minidom
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from podspool_helpers import cli, episodes_in, make_spool, write_manifest

SECRET = "sk-test-observability-0123456789"
TOKEN_PATH = "/hooks/T0KEN-in-path"


class Receiver:
    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts.append(json.loads(body))
                receiver.paths.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{TOKEN_PATH}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def _config(root: Path, url: str) -> None:
    make_spool(root, latency_ms=20, extra=f'[notify]\nwebhook_url = "{url}"\ntimeout_s = 5\n')
    text = (root / "podspool.toml").read_text()
    # no episode-level retries: a failing batch fails at once; every call about "doomed" fails
    text = text.replace("[limits]\n", "[limits]\nmax_retries = 0\n")
    (root / "podspool.toml").write_text(text.replace("[providers.sim]\n", '[providers.sim]\nfail_topic = "doomed"\n'))


def _manifests(root: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    out = {}
    for loc in ("research", "production", "audio", "done", "failed"):
        for eid in episodes_in(root, loc):
            out[eid] = (loc, json.loads((root / loc / eid / "manifest.json").read_text()))
    return out


def _metric(text: str, name: str, **labels: str) -> float:
    lab = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(f"{name}{{{lab}}}" if lab else name) + r" (\S+)$"
    m = re.search(pattern, text, re.M)
    assert m, f"{name} {labels} missing from metrics.prom"
    return float(m.group(1))


def test_dashboard_metrics_timeline_and_webhooks_read_true(tmp_path: Path, receiver: Receiver) -> None:
    root = tmp_path / "spool"
    env = {"OPENAI_API_KEY": SECRET}
    # batch "bad" fails every call: its episode reaches failed/ and is alerted; batch "good" succeeds.
    # One daemon run: metrics.prom describes what that daemon saw (batches it closed, and open ones).
    _config(root, receiver.url)
    write_manifest(tmp_path / "bad.json", {"batch_id": "bad", "topics": ["doomed"]})
    assert cli("submit", str(tmp_path / "bad.json"), "--spool", str(root)).returncode == 0
    write_manifest(tmp_path / "good.json", {"batch_id": "good", "topics": ["alpha", "beta", "gamma"]})
    assert cli("submit", str(tmp_path / "good.json"), "--spool", str(root)).returncode == 0
    run = cli("run", "--once", "--spool", str(root), env=env, timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]

    truth = _manifests(root)
    assert sorted(e for e, (loc, _) in truth.items() if loc == "failed") == ["ep_001_bad"]
    assert sorted(e for e, (loc, _) in truth.items() if loc == "done") == [f"ep_00{i}_good" for i in (1, 2, 3)]

    # ---- podspool status --json: counts and costs as the folders say --------------------------
    out = cli("status", "--json", "--spool", str(root))
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["runtime"] is None  # no daemon is running any more
    by_id = {b["batch_id"]: b for b in status["batches"]}
    for bid in ("bad", "good"):
        eps = [m for _, (loc, m) in truth.items() if m["batch_id"] == bid]
        b = by_id[bid]
        assert b["total"] == len(eps)
        assert b["completed"] == sum(1 for e, (loc, m) in truth.items() if m["batch_id"] == bid and loc == "done")
        assert b["failed"] == sum(1 for e, (loc, m) in truth.items() if m["batch_id"] == bid and loc == "failed")
        assert b["in_progress"] == 0
        for stage in ("research", "production", "audio", "total"):
            assert b["costs"][stage] == pytest.approx(sum(m["costs"][stage] for m in eps), abs=1e-6)
    assert by_id["good"]["costs"]["total"] > 0
    text = cli("status", "--spool", str(root))
    assert text.returncode == 0 and "BATCH PRODUCTION DASHBOARD" in text.stdout and "not running" in text.stdout

    # ---- metrics.prom -------------------------------------------------------------------------
    prom = (root / "metrics.prom").read_text()
    assert _metric(prom, "podspool_up") == 0  # written at close
    for loc in ("research", "production", "audio", "done", "failed"):
        assert _metric(prom, "podspool_episodes", location=loc) == len(episodes_in(root, loc))
    for stage in ("research", "production", "audio"):
        assert _metric(prom, "podspool_spend_usd", stage=stage) == pytest.approx(
            sum(m["costs"][stage] for _, m in truth.values()), abs=1e-6)
        done_runs = sum(1 for _, m in truth.values() if m["phases"][stage] == "done")
        assert _metric(prom, "podspool_stage_duration_seconds_count", stage=stage) == done_runs
    assert _metric(prom, "podspool_stage_errors", stage="research") == 1
    assert _metric(prom, "podspool_api_requests", api="sim") == 9  # one call per finished phase
    assert _metric(prom, "podspool_batches", state="complete") == 2
    assert SECRET not in prom

    # ---- timeline.svg -------------------------------------------------------------------------
    for bid, n in (("good", 3), ("bad", 1)):
        svg = (root / "batches" / bid / "timeline.svg").read_text()
        xml.dom.minidom.parseString(svg)  # well-formed, self-contained
        assert "<script" not in svg and "href" not in svg
        rows = {m.group(1) for m in re.finditer(r"<title>(ep_\d+_\w+) ", svg)}
        assert len(rows) == n
    good_svg = (root / "batches" / "good" / "timeline.svg").read_text()
    for stage in ("research", "production", "audio"):
        assert f"ep_001_good {stage} run" in good_svg

    # ---- webhooks -----------------------------------------------------------------------------
    events = [(p["event"], p.get("batch", {}).get("batch_id") or p.get("batch_id")) for p in receiver.posts]
    assert ("episode_failed", "bad") in events
    assert ("batch_complete", "bad") in events
    assert ("batch_complete", "good") in events
    failed = next(p for p in receiver.posts if p["event"] == "episode_failed")
    assert failed["episode_id"] == "ep_001_bad" and failed["phase"] == "research" and "sim" in failed["error"]
    good = next(p for p in receiver.posts if p["event"] == "batch_complete" and p["batch"]["batch_id"] == "good")
    assert good["batch"]["completed"] == 3 and good["batch"]["costs"]["total"] == by_id["good"]["costs"]["total"]
    assert all(p == TOKEN_PATH for p in receiver.paths)
    assert SECRET not in json.dumps(receiver.posts)
    # the webhook URL's token never reaches the log
    assert "T0KEN" not in (root / "logs" / "podspool.log").read_text()


def test_alerts_retry_transient_errors_and_never_block(receiver: Receiver) -> None:
    import time

    from podspool.daemon.models import EpisodeManifest
    from podspool.daemon.observers.alerts import AlertsHook

    flaky = {"left": 2}
    original = receiver.server.RequestHandlerClass.do_POST  # type: ignore[attr-defined]

    def do_post(handler: BaseHTTPRequestHandler) -> None:
        if flaky["left"] > 0:
            flaky["left"] -= 1
            handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
            handler.send_response(503)
            handler.end_headers()
            return
        original(handler)

    receiver.server.RequestHandlerClass.do_POST = do_post  # type: ignore[attr-defined]
    hook = AlertsHook(receiver.url, timeout_s=2, backoff_s=0.01, secrets={"openai": SECRET})
    m = EpisodeManifest(episode_number=1, session_id="ep_001_x", batch_id="x", topic="t")
    started = time.monotonic()
    hook.on_episode_failed(m)
    assert time.monotonic() - started < 0.1  # queued, not posted on the caller's thread
    hook.close()
    assert flaky["left"] == 0 and [p["event"] for p in receiver.posts] == ["episode_failed"]

    # a receiver that is not there: still no blocking, and close() is bounded
    dead = AlertsHook("http://127.0.0.1:9/nothing", timeout_s=0.5, backoff_s=0.01)
    started = time.monotonic()
    dead.on_crash(RuntimeError(f"boom with {SECRET}"))
    dead.close()
    assert time.monotonic() - started < 5
