"""The real daemon with an OpenAI-compatible writer on loopback: every style done with both hosts voiced,
bad replies in failed/ with their reason in manifest.json, one writer call per good episode."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from fakeapi import FakeApi, Reply, Request
from loopback_writers import BAD, STYLES, Model, chat_handler, daemon_config
from podspool_helpers import cli, episodes_in, read_json

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["honeybees", "tides", "gps", "vaccines", "black_holes", "penicillin", "why_we_sleep", "fermi_paradox",
           "plate_tectonics", "printing_press"]


def test_styles_and_bad_replies_through_the_daemon(tmp_path: Path) -> None:
    cases: list[tuple[str, Model]] = [*sorted(STYLES.items()), ("refusal", BAD["refusal"]), ("cut", BAD["cut"])]
    topics = {f"{SOURCES[i].replace('_', ' ')} ({name})": model for i, (name, model) in enumerate(cases)}

    def answer(request: Request) -> Reply:
        topic = re.search(r'about "(.+?)"', request.json()["messages"][1]["content"])
        assert topic, "a prompt without a topic"
        return chat_handler(topics[topic.group(1)])(request)

    episodes = [{"number": i + 1, "topic": t, "sources": [f"examples/sources/{SOURCES[i]}.md"]}
                for i, t in enumerate(topics)]
    spool = tmp_path / "spool"
    (spool / "inbox").mkdir(parents=True)
    with FakeApi(answer) as fake:
        (spool / "podspool.toml").write_text(daemon_config(REPO, fake.base_url))
        (spool / "inbox" / "w.json").write_text(json.dumps({"batch_id": "w", "episodes": episodes}))
        run = cli("run", "--once", "--spool", str(spool), cwd=REPO)
        calls = Counter(re.search(r'about "(.+?)"', r.json()["messages"][1]["content"]).group(1)  # type: ignore[union-attr]
                        for r in fake.requests)
    assert run.returncode == 0, run.stderr[-3000:]
    n_good = len(STYLES)
    assert episodes_in(spool, "done") == [f"ep_{i:03d}_w" for i in range(1, n_good + 1)]
    assert episodes_in(spool, "failed") == [f"ep_{i:03d}_w" for i in range(n_good + 1, n_good + 3)]
    for i, topic in enumerate(topics, 1):
        folder = spool / ("done" if i <= n_good else "failed") / f"ep_{i:03d}_w"
        manifest = read_json(folder / "manifest.json")
        if i <= n_good:
            script = (folder / "script.md").read_text()
            assert set(re.findall(r"^\*\*(\w+):\*\*", script, re.M)) == {"Alex", "Sam"}, topic
            assert calls[topic] == 1 and manifest["status"] == "done"
        else:
            assert manifest["status"] == "failed" and manifest["attempts"] == 1
            error = json.dumps(manifest["errors"])
            why = "declined to write the script" if "refusal" in topic else "cut at the token limit"
            assert why in error and "quality gates refused" in error
            assert calls[topic] == 2  # the same reply to the feedback stopped the revisions
