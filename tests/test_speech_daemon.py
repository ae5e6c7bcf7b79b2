"""The real daemon voices episodes through ElevenLabs dialogue on a loopback fake: a few requests each."""

from __future__ import annotations

import json
from pathlib import Path

from fakeapi import FakeApi
from fakespeech import dialogue_handler
from podspool_helpers import cli, episodes_in, write_manifest

KEY = "xi-test-SECRET-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
[research]
provider = "local"
source_roots = ["{root}"]
[audio]
provider = "elevenlabs"
mp3 = false
[providers.elevenlabs]
base_url = "{url}"
max_attempts = 2
max_retry_time_s = 2
"""


def test_each_episode_is_voiced_in_three_requests_or_fewer(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    (spool / "inbox").mkdir(parents=True)
    episodes = [{"number": 1, "topic": "Why we sleep", "sources": [str(ROOT / "examples/sources/why_we_sleep.md")]},
                {"number": 2, "topic": "Ocean tides", "sources": [str(ROOT / "examples/sources/tides.md")]}]
    with FakeApi(dialogue_handler()) as fake:
        (spool / "podspool.toml").write_text(CONFIG.format(root=ROOT, url=fake.base_url))
        write_manifest(spool / "inbox" / "b.json", {"batch_id": "dlg", "episodes": episodes})
        out = cli("run", "--once", "--spool", str(spool), cwd=ROOT, env={"ELEVENLABS_API_KEY": KEY}, timeout=150)
    assert out.returncode == 0, out.stderr[-3000:]
    assert episodes_in(spool, "done") == ["ep_001_dlg", "ep_002_dlg"]
    for ep in episodes_in(spool, "done"):
        audio = json.loads((spool / "done" / ep / "audio.json").read_text())
        (usage,) = audio["usage"]
        assert audio["words"] >= 300 and usage["requests"] <= 3, (audio["words"], usage["requests"])
        manifest = json.loads((spool / "done" / ep / "manifest.json").read_text())
        assert manifest["costs"]["audio"] > 0
    assert len(fake.requests) <= 3 * 2
    assert all(r.path == "/v1/text-to-dialogue/with-timestamps" for r in fake.requests)
    assert KEY not in (spool / "logs" / "podspool.log").read_text()


def test_plan_counts_speech_requests_as_each_provider_makes_them() -> None:
    from podspool.daemon.cli.plan import stage_work
    from podspool.daemon.config import Config

    def audio(**cfg: object) -> tuple[str, int, float]:
        w = stage_work(Config.model_validate({"plan": {"script_words": 450, "words_per_turn": 22}, **cfg}), "audio")
        return w.api, w.calls, round(sum(u.characters for u in w.usage))

    # 450 words ~ 2,700 characters: two dialogue requests, as the loopback fake counted above
    assert audio(audio={"provider": "elevenlabs"}) == ("elevenlabs", 2, 2700)
    assert audio(audio={"provider": "elevenlabs"}, providers={"elevenlabs": {"mode": "per_turn"}})[:2] == (
        "elevenlabs", 20)
    assert audio(audio={"provider": "openai"})[:2] == ("openai_speech", 20)
    assert audio(audio={"provider": "piper"})[:2] == ("piper", 1)
    w = stage_work(Config.model_validate({"audio": {"provider": "piper"}}), "audio")
    assert not w.usage  # offline: nothing to pay
