"""Property-based fuzzing of manifest intake (hypothesis): in process against check_manifest, then live
against a running daemon's inbox. Whatever arrives, the answer is an accepted batch or a rejection that
says why; never an exception, a crash, or a silently dropped file."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import unicodedata
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from podspool.daemon.core.recovery import batch_of_folder
from podspool.daemon.intake.validate import ManifestProblem, check_manifest
from podspool_helpers import episodes_in, make_spool, start_daemon, wait_for

FIELDS = {"batch_id", "starting_episode", "topics", "episodes", "strategy", "priority", "budget_usd"}
EPISODE_FIELDS = {"number", "topic", "title", "notes", "sources"}
STRATEGIES = ("small_batch", "medium_batch", "large_batch")
BATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CASES = {"in_process": 0}

# ---- generators ---------------------------------------------------------------------------------

junk = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)
numbers = st.one_of(st.integers(-5, 5), st.integers(99990, 100005), st.integers(), st.floats(), st.booleans(),
                    st.just(1.0), st.text(max_size=5))
texts = st.one_of(st.text(max_size=30), st.text(min_size=495, max_size=505), st.just("  "), st.just(""),
                  st.sampled_from(["../../etc", "a/b", "ep_001_x", "\u202e\u0000\ud7ff", "Dark matter"]))
sources = st.lists(st.sampled_from(["https://example.com/a", "http://", "/etc/passwd", "../../etc/shadow",
                                    "notes.md", "file:///etc/passwd", ""]), max_size=3)
episode = st.fixed_dictionaries(
    {"number": numbers, "topic": texts},
    optional={"title": texts | st.none(), "notes": texts | st.none(), "sources": sources | junk, "extra": junk})
manifest_dict = st.fixed_dictionaries(
    {},
    optional={
        "batch_id": st.one_of(st.from_regex(BATCH_ID, fullmatch=True), texts, st.none(), numbers),
        "starting_episode": numbers,
        "topics": st.lists(texts, max_size=4) | junk,
        "episodes": st.lists(episode | junk, max_size=3) | junk,
        "strategy": st.sampled_from([*STRATEGIES, "huge_batch", None]) | junk,
        "priority": numbers | st.integers(-1001, 1001),
        "budget_usd": numbers | st.sampled_from([0, 0.5, -0.0, -1, 1e308]),
        "unknown_field": junk,
    })
valid_dict = st.fixed_dictionaries(
    {"batch_id": st.from_regex(BATCH_ID, fullmatch=True),
     "topics": st.lists(st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"),
                                              exclude_characters="\ufffe\uffff"), min_size=1, max_size=40)
                        .filter(lambda t: t.strip()), min_size=1, max_size=3)},
    optional={"priority": st.integers(-1000, 1000), "strategy": st.sampled_from(STRATEGIES),
              "budget_usd": st.floats(0, 1e6) | st.integers(0, 10**6)})


def _encode(doc: Any, how: str) -> bytes:
    text = json.dumps(doc, ensure_ascii=how == "ascii", allow_nan=True)
    if how == "truncated":
        text = text[: max(0, len(text) // 2)]
    elif how == "nan":
        text = text.replace("}", ', "budget_usd": NaN}', 1)
    elif how == "huge":
        text = text.replace("{", '{"priority": 1' + "0" * 5000 + ", ", 1)
    elif how == "deep":
        text = "[" * 100000 + "]" * 100000
    elif how == "dupkey":
        text = text.replace("{", '{"priority": 1, "priority": 2, ', 1)
    elif how == "latin1":
        return text.encode("utf-8") + b"\xff\xfe"
    elif how == "bom":
        return b"\xef\xbb\xbf" + text.encode("utf-8")
    return text.encode("utf-8")


raw_manifests = st.one_of(
    st.tuples(manifest_dict | valid_dict | junk,
              st.sampled_from(["plain", "ascii", "truncated", "nan", "huge", "deep", "dupkey", "latin1", "bom"]))
    .map(lambda t: _encode(*t)),
    st.binary(max_size=200),
)

# ---- the rules, written out independently of the pydantic model ------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _text_ok(v: Any, lo: int, hi: int, lines: bool = False) -> bool:
    """A string of lo..hi characters that a feed can carry: no control character (Unicode category Cc;
    with `lines`, tab, newline and carriage return are fine), no line separator in one-line text, no
    non-character U+FFFE/U+FFFF."""
    if not (isinstance(v, str) and lo <= len(v) <= hi):
        return False
    allowed = "\t\n\r" if lines else ""
    return not any((unicodedata.category(c) in ("Cc", "Cs") and c not in allowed) or c in "\ufffe\uffff"
                   or (not lines and unicodedata.category(c) in ("Zl", "Zp")) for c in v)


def violations(doc: Any) -> list[str]:
    """Why `doc` breaks the contract's manifest rules (CONTRACT.md, 'Batch manifest'); empty if it does not."""
    if not isinstance(doc, dict):
        return ["not an object"]
    bad = [f"unknown {k}" for k in doc if k not in FIELDS]
    bid = doc.get("batch_id")
    if bid is not None and not (isinstance(bid, str) and BATCH_ID.fullmatch(bid)):
        bad.append("batch_id")
    start = doc.get("starting_episode", 1)
    if not (_is_int(start) and 1 <= start <= 99999):
        bad.append("starting_episode")
    topics, eps = doc.get("topics", []), doc.get("episodes", [])
    if not isinstance(topics, list) or not all(_text_ok(t, 1, 500) and t.strip() for t in topics):
        bad.append("topics")
        topics = []
    numbers: list[Any] = [start + i for i in range(len(topics))] if _is_int(start) else []
    if not isinstance(eps, list):
        bad.append("episodes")
        eps = []
    for ep in eps:
        if not isinstance(ep, dict) or set(ep) - EPISODE_FIELDS:
            bad.append("episode fields")
            continue
        n = ep.get("number")
        if not (_is_int(n) and 1 <= n <= 99999):
            bad.append("episode number")
        numbers.append(n)
        if not (_text_ok(ep.get("topic"), 1, 500) and ep["topic"].strip()):
            bad.append("episode topic")
        for f, hi in (("title", 500), ("notes", 20000)):
            if ep.get(f) is not None and not _text_ok(ep[f], 0, hi, lines=f == "notes"):
                bad.append(f"episode {f}")
        srcs = ep.get("sources", [])
        if not isinstance(srcs, list) or not all(_text_ok(s, 1, 4096) for s in srcs):
            bad.append("episode sources")
        elif any(s.startswith(("/etc", "../", "file:")) for s in srcs):
            bad.append("a source outside the roots")
    if not topics and not eps:
        bad.append("no episode")
    if any(_is_int(n) and n > 99999 for n in numbers):
        bad.append("numbers past 99999")
    if len([n for n in numbers if _is_int(n)]) != len({n for n in numbers if _is_int(n)}):
        bad.append("duplicate numbers")
    if doc.get("strategy") is not None and doc["strategy"] not in STRATEGIES:
        bad.append("strategy")
    prio = doc.get("priority", 0)
    if not (_is_int(prio) and -1000 <= prio <= 1000):
        bad.append("priority")
    budget = doc.get("budget_usd")
    if budget is not None and not ((_is_int(budget) or isinstance(budget, float)) and math.isfinite(budget)
                                   and budget >= 0):
        bad.append("budget_usd")
    return bad


# ---- in process -------------------------------------------------------------------------------------


@settings(max_examples=600, deadline=None)
@given(raw=raw_manifests)
def test_check_manifest_never_raises_and_never_accepts_a_bad_manifest(raw: bytes) -> None:
    CASES["in_process"] += 1
    roots = [Path("/nonexistent-podspool-root")]
    try:
        manifest = check_manifest(raw, roots)
    except ManifestProblem as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        return
    doc = json.loads(raw.decode("utf-8-sig"))
    assert violations(doc) == [], (doc, manifest)


@settings(max_examples=150, deadline=None)
@given(doc=valid_dict)
def test_every_valid_manifest_is_accepted(doc: dict[str, Any]) -> None:
    manifest = check_manifest(json.dumps(doc).encode(), [Path("/nonexistent-podspool-root")])
    assert manifest.batch_id == doc["batch_id"]
    assert [e.topic for e in manifest.all_episodes()] == [t.strip() for t in doc["topics"]]


# ---- live: a running daemon's inbox -------------------------------------------------------------------

live_valid = valid_dict.map(lambda d: _encode({**d, "topics": d["topics"][:2]}, "plain"))


@settings(max_examples=1, deadline=None, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.data_too_large,
                                 HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(good=st.lists(live_valid, min_size=15, max_size=15), hostile=st.lists(raw_manifests, min_size=35, max_size=35),
       order=st.randoms())
def test_live_inbox_fuzz_every_file_accepted_or_rejected(good: list[bytes], hostile: list[bytes], order: Any,
                                                          tmp_path: Path) -> None:
    # hypothesis tries the simplest drop first (35 times b"{}"); ask for a varied one, before any daemon starts
    assume(len(set(hostile)) >= 25)
    # distinct ids, or all but one would be rejected as "already known" (hypothesis likes repeating itself)
    files = [json.dumps({**json.loads(g), "batch_id": f"g{i}_{json.loads(g)['batch_id']}"[:64]}).encode()
             for i, g in enumerate(good)] + hostile
    order.shuffle(files)
    spool = make_spool(tmp_path / f"spool-{os.getpid()}-{len(os.listdir(tmp_path))}", latency_ms=0,
                       extra="[logging]\nstderr = false\n")
    outside = spool.parent / (spool.name + "-drop")
    outside.mkdir()
    proc = start_daemon(spool)
    names = []
    try:
        wait_for(lambda: (spool / "logs" / "podspool.log").exists() and "podspool ready" in
                 (spool / "logs" / "podspool.log").read_text(), 30, proc, "the daemon")
        for i, data in enumerate(files):
            name = f"f{i:02d}.json" if i % 10 else f"f{i:02d}.txt"  # some with a name it never reads
            (outside / name).write_bytes(data)
            os.rename(outside / name, spool / "inbox" / name)  # dropped whole, as an operator would
            names.append(name)
        wait_for(lambda: not os.listdir(spool / "inbox"), 60, proc, "the inbox to empty")
        assert proc.poll() is None, "the daemon must survive any input"
        # stop it before looking: a running daemon moves episodes between the folders this scan lists one by one
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        sources = {}
        for bid in os.listdir(spool / "batches"):
            session = json.loads((spool / "batches" / bid / "session.json").read_text())
            sources[session["source"]["name"]] = bid
        everywhere = [e for loc in ("research", "production", "audio", "done", "failed") for e in episodes_in(spool, loc)]
        accepted = rejected = 0
        for name in names:
            if name in sources:
                accepted += 1
                bid = sources[name]
                batch = json.loads((spool / "batches" / bid / "batch.json").read_text())
                assert violations({k: v for k, v in batch.items() if k != "batch_id"}) == [], batch
                n = len(batch.get("topics", [])) + len(batch.get("episodes", []))
                # by the folder name's batch part: a suffix match counted batch "g3_0"'s episodes for batch "0"
                assert len([e for e in everywhere if batch_of_folder(e) == bid]) == n
                assert not (spool / "rejected" / name).exists()
            else:
                rejected += 1
                assert (spool / "rejected" / name).exists(), f"{name} was silently dropped"
                assert (spool / "rejected" / f"{name}.error.txt").read_text().strip(), name
        assert len(everywhere) == len(set(everywhere))
        print(f"\nlive fuzz: {len(names)} files dropped, {accepted} accepted, {rejected} rejected; "
              f"{CASES['in_process']} in-process cases ran before")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(30) == 0
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise
