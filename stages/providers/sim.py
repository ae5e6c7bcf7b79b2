"""The sim provider: a dry run of every stage with configurable latency, failures and pretend cost.

No network, no spend. Used for dry runs, tests of the pipeline and benchmarks.
"""

from __future__ import annotations

import functools
import math
import random
import struct
import time

from podspool.stages.base import (
    EpisodeInput,
    Finding,
    ResearchOutput,
    SpeechOutput,
    StageContext,
    StageError,
    Turn,
    Usage,
    WriterOutput,
)
from podspool.stages.script.segments import Outline, SegmentRequest


class SimProvider:
    name = "sim"
    dry_run = True  # a dry run: made-up findings, script and audio, nothing to check against

    def __init__(self) -> None:
        self._leaked: list[bytes] = []  # leak_mb_per_call: what a leaky client would hold on to

    def _call(self, api: str, episode: EpisodeInput, ctx: StageContext, stage: str) -> Usage:
        sim = ctx.settings.providers.sim
        ctx.limiter.acquire(api)
        latency = sim.stage_latency_ms.get(stage, sim.latency_ms)
        if latency:
            time.sleep(latency / 1000.0)
        usage = Usage(api=api, model="sim", cost_usd=sim.cost_per_call_usd)
        if sim.leak_mb_per_call:
            self._leaked.append(b"\x01" * int(sim.leak_mb_per_call * 2**20))  # written, so it counts in RSS
        if sim.hang_topic and sim.hang_topic in episode.topic:
            time.sleep(24 * 3600)  # stuck: only the supervisor's time limit ends this call
        if sim.fail_topic and sim.fail_topic in episode.topic:
            raise StageError(f"sim: {api} always fails for this topic", cost_usd=sim.cost_per_call_usd, usage=[usage])
        if sim.error_rate:
            # seeded only when a failure may be drawn: seeding (from urandom, without a seed) costs more
            # than the rest of the call
            rng = random.Random(None if sim.seed is None else hash((sim.seed, episode.episode_id, api, episode.attempt)))
            if rng.random() < sim.error_rate:
                raise StageError(f"sim: injected failure of {api}", cost_usd=sim.cost_per_call_usd, usage=[usage])
        return usage

    def research(self, episode: EpisodeInput, ctx: StageContext, sources: object = None) -> ResearchOutput:
        usage = self._call("sim", episode, ctx, "research")
        findings = [
            Finding(text=f"Simulated finding {i} about {episode.topic}.", source=f"sim://{episode.episode_id}/{i}",
                    location=f"item {i}", score=1.0 / i)
            for i in range(1, 4)
        ]
        return ResearchOutput(provider=self.name, findings=findings, citations=[f.source for f in findings],
                              searched=[episode.topic], usage=[usage], grounded=False)

    def write(self, episode: EpisodeInput, research: ResearchOutput, hosts: list[str],
              feedback: list[str], ctx: StageContext) -> WriterOutput:
        usage = self._call("sim", episode, ctx, "production")
        a, b = hosts[0], hosts[1 % len(hosts)]  # a cast of one: the narrator says both lines
        lines = [f"# {episode.title or episode.topic}", ""]
        for i, f in enumerate(research.findings, 1):
            lines += [f"**{a}:** Segment {i}: {f.text} [{i}]", "", f"**{b}:** Noted, from {f.source}.", ""]
        return WriterOutput(script="\n".join(lines), usage=[usage])

    def outline(self, episode: EpisodeInput, research: ResearchOutput, hosts: list[str], planned: Outline,
                ctx: StageContext) -> tuple[Outline, list[Usage]]:
        """A long episode's outline costs a call, as a model writer's does: the plan's calls stay true."""
        return planned, [self._call("sim", episode, ctx, "production")]

    def write_segment(self, episode: EpisodeInput, research: ResearchOutput, hosts: list[str],
                      request: SegmentRequest, ctx: StageContext) -> WriterOutput:
        usage = self._call("sim", episode, ctx, "production")
        lines = [request.heading, ""]
        for i in request.segment.findings:
            f = research.findings[i - 1]
            lines += [f"**{hosts[0]}:** {f.text} [{i}]", "", f"**{hosts[-1]}:** Noted, from {f.source}.", ""]
        return WriterOutput(script="\n".join(lines), usage=[usage])

    def synthesize(self, turns: list[Turn], ctx: StageContext) -> SpeechOutput:
        episode = EpisodeInput(episode_id="sim", batch_id="sim", number=0, topic=" ".join(t.text for t in turns[:1]))
        usage = self._call("sim", episode, ctx, "audio")
        rate = ctx.settings.audio.sample_rate
        pcm = _tone(rate)
        usage.characters = sum(len(t.text) for t in turns)
        return SpeechOutput(pcm=pcm, sample_rate=rate, usage=[usage])


@functools.lru_cache(maxsize=4)
def _tone(rate: int) -> bytes:
    """One second of a 440 Hz tone, made once per rate (the dry run should cost nothing but its latency)."""
    return b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(rate))
