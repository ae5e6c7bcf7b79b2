"""A producer in the loop, through the real command line: review holds before speech is paid for,
approval (with hand edits held to the hard gates), rejection with a note the writer reads, redo from a
stage paying for that stage only, and a kill at every durable step of approve and redo."""

from __future__ import annotations

import json
import re
import shutil
import signal
from pathlib import Path

import pytest
from fakeapi import FakeApi
from fakespeech import dialogue_handler
from loopback_writers import chat_server, obedient
from podspool_helpers import cli, episodes_in, make_spool, read_json, start_daemon, wait_for, write_manifest

ROOT = Path(__file__).resolve().parents[1]
KEY = "xi-test-0123456789abcdef"
SOURCES = ["why_we_sleep.md", "tides.md", "honeybees.md", "gps.md", "penicillin.md"]
CONFIG = """
[research]
provider = "local"
source_roots = ["{root}"]
[production]
provider = "openai"
review = true
[audio]
provider = "elevenlabs"
mp3 = false
[providers.openai]
base_url = "{writer}"
model = "llama3.1"
[providers.elevenlabs]
base_url = "{speech}"
max_attempts = 2
max_retry_time_s = 2
[limits]
retry_backoff_s = 0.05
"""


def _texts(requests: list) -> list[str]:  # type: ignore[type-arg]
    return [item["text"] for r in requests for item in r.json()["inputs"]]


def _run(spool: Path) -> None:
    out = cli("run", "--once", "--spool", str(spool), cwd=ROOT, env={"ELEVENLABS_API_KEY": KEY}, timeout=150)
    assert out.returncode == 0, out.stderr[-3000:]


def test_review_hold_approve_edit_reject_and_redo(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    (spool / "inbox").mkdir(parents=True)
    episodes = [{"number": i + 1, "topic": name.removesuffix(".md").replace("_", " "),
                 "sources": [str(ROOT / "examples" / "sources" / name)]} for i, name in enumerate(SOURCES)]
    eids = [f"ep_{i:03d}_rv" for i in range(1, 6)]
    with chat_server(obedient) as writer, FakeApi(dialogue_handler()) as speech:
        (spool / "podspool.toml").write_text(CONFIG.format(root=ROOT, writer=writer.base_url, speech=speech.base_url))
        write_manifest(spool / "inbox" / "rv.json", {"batch_id": "rv", "episodes": episodes})
        _run(spool)
        # every script waits for a person, with its predicted speech cost; no speech was asked for
        assert episodes_in(spool, "review") == eids and not speech.requests
        waiting = read_json(spool / "review" / eids[0] / "manifest.json")
        assert waiting["review"]["state"] == "waiting" and waiting["review"]["predicted_audio_usd"] > 0
        assert waiting["status"] == "pending"
        status = json.loads(cli("status", "--spool", str(spool), "--json").stdout)
        assert status["batches"][0]["progress"]["review"] == 5

        # a hand edit to episode 2: an added sentence, voiced exactly as edited
        script = spool / "review" / eids[1] / "script.md"
        text = script.read_text()
        first = re.search(r"^\*\*(\w+):\*\* (.+)$", text, re.M)
        assert first is not None
        script.write_text(text.replace(first.group(0), first.group(0) + " We checked this twice by hand.", 1))
        # a hand edit to episode 4 that breaks a hard gate: a speaker not in the cast
        bad = spool / "review" / eids[3] / "script.md"
        bad.write_text(re.sub(r"^\*\*\w+:\*\*", "**Zed:**", bad.read_text(), count=1, flags=re.M))
        refused = cli("approve", eids[3], "--spool", str(spool))
        assert refused.returncode == 2 and "speakers" in refused.stderr and eids[3] in refused.stderr
        assert episodes_in(spool, "review") == eids  # nothing moved

        assert cli("approve", *eids[:3], "--spool", str(spool)).returncode == 0
        rejected = cli("reject", eids[4], "--note", "Name the honeybee waggle dance", "--spool", str(spool))
        assert rejected.returncode == 0, rejected.stderr
        writes_before = len(writer.requests)
        _run(spool)
        assert episodes_in(spool, "done") == eids[:3]
        assert episodes_in(spool, "review") == [eids[3], eids[4]]  # the rejected one was written again
        assert 3 <= len(speech.requests) <= 9  # the three approved episodes only, a few requests each
        assert any("We checked this twice by hand." in t for t in _texts(speech.requests))
        edited = read_json(spool / "done" / eids[1] / "manifest.json")["review"]
        assert edited["edited"] is True and edited["state"] == "approved"
        assert not read_json(spool / "done" / eids[0] / "manifest.json")["review"]["edited"]
        new_prompts = [json.dumps(r.json()["messages"]) for r in writer.requests[writes_before:]]
        assert new_prompts and all("Name the honeybee waggle dance" in p for p in new_prompts)
        assert (spool / "review" / eids[4] / "script.reviewed-1.md").is_file()

        # redo episode 1 from audio: no research or writing, speech for it alone, the old take kept
        before = read_json(spool / "done" / eids[0] / "manifest.json")
        session_before = read_json(spool / "batches" / "rv" / "session.json")["costs"]
        speech_before, writes_before = len(speech.requests), len(writer.requests)
        research_mtime = (spool / "done" / eids[0] / "research.json").stat().st_mtime_ns
        assert cli("redo", eids[0], "--from", "audio", "--spool", str(spool)).returncode == 0
        _run(spool)
        folder = spool / "done" / eids[0]
        after = read_json(folder / "manifest.json")
        assert len(writer.requests) == writes_before and 1 <= len(speech.requests) - speech_before <= 3
        assert (folder / "research.json").stat().st_mtime_ns == research_mtime
        assert (folder / "versions" / "1" / "audio.wav").is_file() and (folder / "audio.wav").is_file()
        assert after["redo_rounds"] == 1
        assert after["costs"]["audio"] > before["costs"]["audio"] > 0
        assert after["costs"]["research"] == before["costs"]["research"]
        assert after["costs"]["production"] == before["costs"]["production"]
        session = read_json(spool / "batches" / "rv" / "session.json")["costs"]
        paid = after["costs"]["audio"] - before["costs"]["audio"]
        assert abs(session["audio"] - (session_before["audio"] + paid)) < 1e-6


def test_unknown_and_ineligible_episodes_move_nothing(tmp_path: Path) -> None:
    spool = _review_spool(tmp_path / "spool")
    write_manifest(spool / "inbox" / "b.json", {"batch_id": "b", "topics": ["one", "two"]})
    assert cli("run", "--once", "--spool", str(spool)).returncode == 0
    assert episodes_in(spool, "review") == ["ep_001_b", "ep_002_b"]
    cases = [("approve", "ep_009_b"), ("approve", "ep_001_b", "ep_404_b"), ("redo", "ep_001_b", "--from", "audio"),
             ("redo", "ep_001_b", "--from", "mastering"), ("reject", "ep_001_b"), ("approve", "--batch", "nope")]
    for args in cases:
        out = cli(*args, "--spool", str(spool))
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert episodes_in(spool, "review") == ["ep_001_b", "ep_002_b"], args


def _review_spool(root: Path) -> Path:
    """A sim spool whose episodes wait for review after production."""
    spool = make_spool(root, latency_ms=0)
    text = (spool / "podspool.toml").read_text()
    (spool / "podspool.toml").write_text(text.replace('[production]\nprovider = "sim"\n',
                                                      '[production]\nprovider = "sim"\nreview = true\n'))
    return spool


def _crash_steps(spool: Path, *args: str) -> int:
    """Run `podspool args` killed at its 1st, 2nd, ... durable step, each on a fresh copy of `spool`,
    then a daemon to finish: returns how many steps there were. Each copy is checked by the caller."""
    k = 0
    while True:
        k += 1
        copy = spool.parent / f"{spool.name}-k{k}"
        shutil.copytree(spool, copy, symlinks=True)
        out = cli(*args, "--spool", str(copy), env={"PODSPOOL_CRASH_AT": str(k)})
        yield_copy = out.returncode != 0  # killed (or, past the last step, it ran to its end)
        assert cli("run", "--once", "--spool", str(copy)).returncode == 0
        _check(copy)
        if not yield_copy:
            return k
        assert k < 40


def _check(spool: Path) -> None:
    """Every episode in exactly one folder; the done ones paid for their speech exactly once per take."""
    seen: dict[str, str] = {}
    for loc in ("research", "production", "audio", "review", "done", "failed"):
        for eid in episodes_in(spool, loc):
            assert eid not in seen, f"{eid} in both {seen[eid]} and {loc}"
            seen[eid] = loc
    assert sorted(seen) == ["ep_001_k", "ep_002_k", "ep_003_k"]
    for eid, loc in seen.items():
        m = read_json(spool / loc / eid / "manifest.json")
        if loc == "done":  # sim speech costs 0.01 a take; a redo is one more take
            assert abs(m["costs"]["audio"] - 0.01 * (1 + m["redo_rounds"])) < 1e-9, (eid, m["costs"])
            takes = list((spool / loc / eid).glob("versions/*/audio.json"))
            assert len(takes) == m["redo_rounds"]
        assert not list((spool / loc / eid).glob(".tmp-*"))


@pytest.mark.soak  # ~20 s: a daemon run per crash point; .ci/run runs it with the soak tests
def test_a_kill_at_any_step_of_approve_or_redo_loses_and_repays_nothing(tmp_path: Path) -> None:
    spool = _review_spool(tmp_path / "spool")
    write_manifest(spool / "inbox" / "k.json", {"batch_id": "k", "topics": ["one", "two", "three"]})
    assert cli("run", "--once", "--spool", str(spool)).returncode == 0
    assert cli("approve", "ep_003_k", "--spool", str(spool)).returncode == 0
    assert cli("run", "--once", "--spool", str(spool)).returncode == 0
    assert episodes_in(spool, "done") == ["ep_003_k"]
    steps = _crash_steps(spool, "approve", "ep_001_k")
    assert steps >= 3  # the manifest and the move at least, then a run to the end
    redone = tmp_path / "redo"
    shutil.copytree(spool, redone, symlinks=True)
    assert _crash_steps(redone, "redo", "ep_003_k", "--from", "audio") >= 4  # manifest, versions, move


def test_plan_counts_the_episodes_that_will_wait_for_review(tmp_path: Path) -> None:
    config = make_spool(tmp_path / "spool") / "podspool.toml"
    batch = write_manifest(tmp_path / "b.json", {"batch_id": "p", "review": True, "topics": ["a", "b"],
                                                 "episodes": [{"number": 3, "topic": "c", "review": False}]})
    out = cli("plan", str(batch), "--config", str(config), "--json")
    assert out.returncode == 0, out.stderr
    (plan,) = json.loads(out.stdout)["batches"]
    assert plan["review"] == 2 and any("2 of 3 episode(s) wait in review/" in n for n in plan["notes"])


def test_approve_and_redo_against_a_running_daemon(tmp_path: Path) -> None:
    """With a daemon running, the commands send control requests and the daemon moves the folders."""
    spool = _review_spool(tmp_path / "spool")
    write_manifest(spool / "inbox" / "d.json", {"batch_id": "d", "topics": ["one", "two"]})
    proc = start_daemon(spool)
    try:
        wait_for(lambda: episodes_in(spool, "review") == ["ep_001_d", "ep_002_d"], 60, proc, "two in review")
        out = cli("approve", "--batch", "d", "--spool", str(spool))
        assert out.returncode == 0 and "sent to the running daemon" in out.stdout, out.stderr
        wait_for(lambda: episodes_in(spool, "done") == ["ep_001_d", "ep_002_d"], 60, proc, "both done")
        assert cli("redo", "ep_002_d", "--from", "production", "--spool", str(spool)).returncode == 0
        wait_for(lambda: episodes_in(spool, "review") == ["ep_002_d"], 60, proc, "the redone script in review")
        assert (spool / "review" / "ep_002_d" / "versions" / "1" / "script.md").is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_a_redo_in_a_complete_batch_counts_it_unfinished_then_done_again(tmp_path: Path) -> None:
    spool = _review_spool(tmp_path / "spool")
    write_manifest(spool / "inbox" / "c.json", {"batch_id": "c", "review": False, "topics": ["one", "two"]})
    assert cli("run", "--once", "--spool", str(spool)).returncode == 0
    assert episodes_in(spool, "done") == ["ep_001_c", "ep_002_c"]
    assert cli("redo", "ep_001_c", "--from", "audio", "--spool", str(spool)).returncode == 0
    session = read_json(spool / "batches" / "c" / "session.json")
    assert (session["completed"], session["total"]) == (1, 2)  # counted from its folders, not from zero
    assert cli("run", "--once", "--spool", str(spool)).returncode == 0
    session = read_json(spool / "batches" / "c" / "session.json")
    assert (session["completed"], session["failed"], session["state"]) == (2, 0, "complete")
