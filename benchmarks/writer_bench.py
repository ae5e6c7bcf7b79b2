"""Writer benchmark: how many writer calls does an episode cost, and does every style get through?

Runs the real daemon (`podspool run --once`) with `[production] provider = "openai"` pointed at a
loopback OpenAI-compatible server (tests/loopback_writers.py), local research over the example
sources and sim audio. Three batches:

1. a model that follows podspool's prompt: writer calls per episode and first-draft acceptance;
2. models in the common styles (`Alex:`, `HOST A:`, `**Speaker 1**:` lists, `<Person1>` tags, `ALEX (…):`),
   one style per episode in turn: done, both hosts voiced, calls per episode;
3. bad replies (empty, cut at max_tokens, one speaker, invented citations, a refusal): each must end in
   failed/ with its reason in manifest.json.

Prints figures; asserts nothing.

    python benchmarks/writer_bench.py [--episodes 20]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fakeapi import FakeApi, Reply, Request  # noqa: E402
from loopback_writers import BAD, STYLES, Model, chat_handler  # noqa: E402

SOURCES = sorted(p.stem for p in (REPO / "examples" / "sources").glob("*.md"))
CONFIG = """
[research]
provider = "local"
source_roots = ["{repo}"]
[production]
provider = "openai"
[audio]
provider = "sim"
[providers.sim]
latency_ms = 0
[providers.openai]
base_url = "{base_url}/v1"
model = "llama3.1"
max_retry_time_s = 5
[rate_limits]
openai = "6000/minute"
[limits]
retry_backoff_s = 0.05
inbox_settle_s = 0.2
[logging]
stderr = false
"""


def run_batch(models: list[tuple[str, Model]]) -> dict[str, Any]:
    """One batch, episode i answered by models[i]; what each episode cost in writer calls, and its end."""
    by_topic = {f"{SOURCES[i % len(SOURCES)].replace('_', ' ')} (part {i + 1})": m for i, (_, m) in enumerate(models)}

    def answer(request: Request) -> Reply:
        topic = re.search(r'about "(.+?)"', request.json()["messages"][1]["content"])
        return chat_handler(by_topic[topic.group(1)] if topic else BAD["empty"])(request)

    episodes = [{"number": i + 1, "topic": topic, "sources": [f"examples/sources/{SOURCES[i % len(SOURCES)]}.md"]}
                for i, topic in enumerate(by_topic)]
    with FakeApi(answer) as fake, tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp) / "spool"
        (spool / "inbox").mkdir(parents=True)
        (spool / "podspool.toml").write_text(CONFIG.format(repo=REPO, base_url=fake.base_url))
        (spool / "inbox" / "b.json").write_text(json.dumps({"batch_id": "wb", "episodes": episodes}))
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "podspool.daemon", "run", "--once", "--spool", str(spool)],
                       check=True, cwd=REPO, env={**os.environ, "PODSPOOL_CONFIG": ""})
        wall = time.monotonic() - t0
        calls = Counter(re.search(r'about "(.+?)"', r.json()["messages"][1]["content"]).group(1)  # type: ignore[union-attr]
                        for r in fake.requests)
        results = []
        for i, (name, _) in enumerate(models):
            eid = f"ep_{i + 1:03d}_wb"
            where = "done" if (spool / "done" / eid).is_dir() else "failed"
            manifest = json.loads((spool / where / eid / "manifest.json").read_text())
            hosts: set[str] = set()
            if where == "done":
                hosts = set(re.findall(r"^\*\*(\w+):\*\*", (spool / where / eid / "script.md").read_text(), re.M))
            errors = manifest.get("errors") or []
            last = errors[-1] if errors else None
            reason = (last.get("error") or last.get("message") or str(last)) if isinstance(last, dict) else last
            results.append({"model": name, "where": where, "calls": calls[episodes[i]["topic"]],
                            "hosts": hosts, "reason": reason, "attempts": manifest.get("attempts")})
        return {"results": results, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=20)
    args = ap.parse_args()
    n = args.episodes

    obedient = run_batch([("obedient", STYLES["obedient"])] * n)
    rs = obedient["results"]
    first = sum(1 for r in rs if r["where"] == "done" and r["calls"] == 1)
    total_calls = sum(r["calls"] for r in rs)
    print(f"1. model following the prompt, {n} episodes through `podspool run --once` ({obedient['wall_s']:.1f}s):")
    print(f"   done {sum(r['where'] == 'done' for r in rs)}/{n}; writer calls {total_calls} = "
          f"{total_calls / n:.2f} per episode; first-draft acceptance {first}/{n} = {100 * first / n:.0f}%")

    names = sorted(STYLES)
    styled = run_batch([(names[i % len(names)], STYLES[names[i % len(names)]]) for i in range(n)])
    print(f"2. models in {len(names)} styles, one per episode in turn, {n} episodes ({styled['wall_s']:.1f}s):")
    for name in names:
        mine = [r for r in styled["results"] if r["model"] == name]
        done = [r for r in mine if r["where"] == "done"]
        both = sum(1 for r in done if r["hosts"] == {"Alex", "Sam"})
        print(f"   {name:13s} done {len(done)}/{len(mine)}, both hosts voiced {both}/{len(mine)}, "
              f"writer calls per episode {sum(r['calls'] for r in mine) / len(mine):.2f}")

    bad = run_batch(sorted(BAD.items()))
    print(f"3. bad replies ({bad['wall_s']:.1f}s): where each episode ended, after how many writer calls, and why")
    for r in bad["results"]:
        reason = (r["reason"] or "(no reason)").split("): ", 1)[-1]
        print(f"   {r['model']:12s} {r['where']:6s} calls {r['calls']}  {reason[:110]}")


if __name__ == "__main__":
    main()
