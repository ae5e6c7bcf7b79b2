"""`podspool plan`: calls, cost and duration of a batch from the configuration, before anything is spent.

The figures come from the same places the daemon uses: the processes a batch may use per stage (its
strategy's preset, or `[concurrency]`), the shared rate limits and their safety margin, the session cap,
the price table (`stages/costs.py`, with `[pricing]` overrides), and each provider's latency (`sim`'s
own setting; `[plan.latency_s]` or the typical figures in `daemon/config.py` for the others). The
timing model is `daemon/cli/plan_model.py`.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from podspool.daemon.cli.plan_model import Bound, StageLoad, bounds, simulate
from podspool.daemon.config import TYPICAL_LATENCY_S, Config
from podspool.daemon.core.lifecycle import batch_stage_cap
from podspool.daemon.models import BatchManifest, EpisodeManifest
from podspool.daemon.ratelimit.window import Rate
from podspool.stages.base import STAGE_NAMES, StageName, Usage
from podspool.stages.costs import cost_of
from podspool.stages.script import segments
from podspool.stages.show import merge, resolve

OFFLINE = ("local", "espeak", "piper")  # providers that call no API: no calls to count, nothing to pay
CHARS_PER_WORD = 6  # a spoken word and its space, for per-character prices
TOKENS_PER_WORD = 1.35
PUBLISH_S_PER_AUDIO_MINUTE = 0.55


@dataclass
class StageWork:
    """What one episode asks of one stage: calls, their latency and the usage they are billed for."""

    stage: StageName
    provider: str
    api: str
    calls: int
    latency_s: float
    usage: list[Usage] = field(default_factory=list)
    note: str | None = None
    publish_s: float = 0.0  # the audio stage's work after speech (loudness, mp3, checks), on an idle core


def _latency(cfg: Config, stage: StageName, provider: str) -> float:
    if provider == "sim":
        sim = cfg.providers.sim
        return sim.stage_latency_ms.get(stage, sim.latency_ms) / 1000.0
    name = f"local_{'research' if stage == 'research' else 'writer'}" if provider == "local" else provider
    if stage == "audio" and provider == "openai":
        name = "openai_speech"  # the speech endpoint, not the script writer's chat model
    return cfg.plan.latency_s.get(name, TYPICAL_LATENCY_S.get(name, 1.0))


def writer_calls(target: int | None, revisions: float) -> tuple[int, int]:
    """(segments, writer calls) of one episode: one call for a script within one call's reach, else the
    outline and one call per segment; each expected revision re-asks one call (a segment, when segmented)."""
    if not segments.segmented(target):
        return 0, 1 + round(revisions)
    assert target is not None
    k = segments.segment_count(target)
    return k, k + 1 + round(revisions)


def stage_work(cfg: Config, stage: StageName, minutes: float | None = None) -> StageWork:
    """One episode's work at `stage` with the configured provider, for a show of `minutes` (None: no target)."""
    provider = str(getattr(cfg, stage).provider)
    latency = _latency(cfg, stage, provider)
    target = segments.target_words(minutes, cfg.audio.words_per_minute)
    words = target or cfg.plan.script_words
    if provider == "sim":
        # the sim makes one call per stage at cost_per_call_usd (its writer is never revised), except
        # that a long episode's script is an outline and a call per segment, as with a model writer
        calls = writer_calls(target, 0)[1] if stage == "production" else 1
        usage = [Usage(api="sim", model="sim", cost_usd=cfg.providers.sim.cost_per_call_usd) for _ in range(calls)]
        note = f"sim: {calls} writer calls per episode (an outline and {calls - 1} segments)" if calls > 1 else None
        return StageWork(stage, provider, "sim", calls, latency, usage, note=note)
    if provider in OFFLINE:
        # offline work grows with the script: speech time per word, the writer's per finding
        return StageWork(stage, provider, provider, 1, latency * words / cfg.plan.script_words)
    if stage == "research":
        pplx = cfg.providers.perplexity
        if provider == "perplexity":
            model = "search" if pplx.api == "search" else pplx.model or pplx.preset or "sonar"
        else:
            model = cfg.providers.websearch.search_depth
        usage = [Usage(api=provider, model=model, input_tokens=200, output_tokens=900)]
        return StageWork(stage, provider, provider, 1, latency, usage, note=f"{provider}: tokens estimated")
    if stage == "production":
        k, calls = writer_calls(target, cfg.plan.revisions)
        writer_model = cfg.providers.openai.model
        if not k:
            tokens_out = int(words * TOKENS_PER_WORD)
            usage = [Usage(api="openai", model=writer_model, input_tokens=2500, output_tokens=tokens_out)
                     for _ in range(calls)]
            note = f"openai: {calls} draft(s) per episode of about {words} words ([plan] revisions, script_words)"
            return StageWork(stage, provider, "openai", calls, latency, usage, note=note)
        # a segment call reads the prompt, the outline and the summary so far, and writes its budget
        per_segment = int(words / k * TOKENS_PER_WORD)
        outline = Usage(api="openai", model=writer_model, input_tokens=2500, output_tokens=40 * k)
        usage = [outline, *(Usage(api="openai", model=writer_model, input_tokens=1800 + 60 * k,
                                  output_tokens=per_segment) for _ in range(calls - 1))]
        note = (f"openai: {calls} calls per episode of about {words} words (an outline, {k} segments"
                f"{', and expected revisions' if calls > k + 1 else ''})")
        # a model's time goes with what it writes: a segment call writes a k-th of the script, and the
        # typical latency is for a script of [plan] script_words
        return StageWork(stage, provider, "openai", calls, latency * max(0.2, words / k / cfg.plan.script_words),
                         usage, note=note)
    turns = max(1, round(words / cfg.plan.words_per_turn))
    chars = words * CHARS_PER_WORD
    if provider == "openai":  # one request per turn, a voice per host
        speech = cfg.providers.openai_speech
        usage = [Usage(api="openai_speech", model=speech.model, characters=chars // turns) for _ in range(turns)]
        note = f"openai_speech: about {turns} turns and {chars} characters per episode ([plan] script_words, words_per_turn)"
        return StageWork(stage, provider, "openai_speech", turns, latency, usage, note=note)
    # elevenlabs: per_turn is one request per turn; dialogue packs turns into requests of at most
    # max_chars_per_request, each taking as long as the turns it speaks; characters are what it bills
    el = cfg.providers.elevenlabs
    calls = turns if el.mode == "per_turn" else max(1, -(-chars // el.max_chars_per_request))
    usage = [Usage(api="elevenlabs", model=el.model_in_use, characters=chars // calls)
             for _ in range(calls)]
    note = (f"elevenlabs {el.mode}: about {turns} turns and {chars} characters per episode in {calls} request(s) "
            "([plan] script_words, words_per_turn)")
    return StageWork(stage, provider, "elevenlabs", calls, latency * turns / calls, usage, note=note)


def episode_work(cfg: Config, stage: StageName, minutes: float | None) -> StageWork:
    """`stage_work`, plus publishing's time when the episode's length is known: mastering, encoding and
    the read-back check take time in proportion to the audio (fitted on espeak episodes of 3 and 19
    minutes: 0.59-0.77 s per audio minute at a load factor of 1.37)."""
    work = stage_work(cfg, stage, minutes)
    if stage == "audio" and minutes is not None and cfg.audio.mp3 and work.provider != "sim":
        work.publish_s = minutes * PUBLISH_S_PER_AUDIO_MINUTE  # the sim's take is a one-second tone
    return work


def load_factor(cfg: Config) -> float:
    """How much slower the daemon's own work runs now than on an idle machine, from the 1-minute load
    average per core above 1, weighted by `[plan] load_weight` (fitted: half of it shows)."""
    try:
        per_core = os.getloadavg()[0] / max(1, len(os.sched_getaffinity(0)))
    except (OSError, AttributeError):
        return 1.0
    return 1.0 + cfg.plan.load_weight * max(0.0, per_core - 1.0)


def rates(cfg: Config) -> dict[str, Rate]:
    """The daemon's own limits, margin included (`Rate.of`), by API."""
    return {api: Rate.of(n, window) for api, (n, window) in cfg.rate_limits.parsed().items()}


def loads(cfg: Config, strategy: str, works: list[StageWork], factor: float = 1.0) -> list[StageLoad]:
    limited = rates(cfg)
    return [StageLoad(stage=w.stage,
                      processes=batch_stage_cap(strategy, w.stage, int(getattr(cfg.concurrency, w.stage)),
                                                cfg.concurrency_explicit),
                      calls=w.calls, latency_s=w.latency_s, api=w.api if w.api in limited else None,
                      save_s=(getattr(cfg.plan.save_s, w.stage) + w.publish_s) * factor,
                      # the audio stage's first task imports the publishing libraries only when it publishes
                      warmup_s=0.0 if w.stage == "audio" and not cfg.audio.mp3 else
                      getattr(cfg.plan.warmup_s, w.stage) * factor)
            for w in works]


def _bound_by(ranked: list[Bound], episodes: int, duration: float) -> str:
    if not ranked:
        return "nothing (no work)"
    if duration > 2 * episodes / ranked[0].per_second:
        # most of the time goes to starting up: the first episode's way through, each worker's first task
        return "pipeline fill and worker warm-up (too small a batch to reach its steady rate)"
    return ranked[0].what


def episode_minutes(manifest: BatchManifest, cfg: Config) -> list[float | None]:
    """Each episode's target length: its own, else the batch's, else `[production] minutes`."""
    defaults = cfg.production.show_defaults()
    out: list[float | None] = []
    for ep in manifest.all_episodes():
        m = merge(defaults, manifest.show_of(ep)).minutes
        out.append(None if m is None else float(m))
    return out


def mean_work(groups: list[tuple[int, list[StageWork]]]) -> list[StageWork]:
    """One episode's work per stage, averaged over episodes of different lengths (the timing model runs
    one load per stage); calls and costs are summed per group, never from this."""
    n = sum(count for count, _ in groups)
    out = []
    for i, stage in enumerate(STAGE_NAMES):
        ws = [(count, works[i]) for count, works in groups]
        first = ws[0][1]
        calls = sum(c * w.calls for c, w in ws) / n
        busy = sum(c * w.calls * w.latency_s for c, w in ws) / n
        whole = max(1, round(calls))
        out.append(StageWork(stage, first.provider, first.api, whole, busy / whole, [], first.note,
                             sum(c * w.publish_s for c, w in ws) / n))
    return out


def plan_batch(manifest: BatchManifest, cfg: Config, batch_id: str | None = None) -> dict[str, Any]:
    """The plan of one batch, in the contract's shape (plus `bounds` and `notes`)."""
    n = len(manifest.all_episodes())
    strategy = manifest.effective_strategy()
    lengths = Counter(episode_minutes(manifest, cfg))
    groups = [(count, [episode_work(cfg, s, minutes) for s in STAGE_NAMES]) for minutes, count in lengths.items()]
    works = groups[0][1] if len(groups) == 1 else mean_work(groups)
    settings = cfg.stage_settings()
    calls: dict[str, int] = {}
    cost = {"research": 0.0, "production": 0.0, "audio": 0.0}
    for count, group in groups:
        for w in group:
            if w.provider not in OFFLINE:
                calls[w.api] = calls.get(w.api, 0) + w.calls * count
            cost[w.stage] = round(cost[w.stage] + cost_of(w.usage, settings) * count, 6)
    cost["total"] = round(cost["research"] + cost["production"] + cost["audio"], 6)
    factor = load_factor(cfg)
    stage_loads = loads(cfg, strategy, works, factor)
    limited = rates(cfg)
    cap = cfg.limits.max_sessions_in_memory
    supervisor_s, handoff_s = cfg.plan.supervisor_s * factor, cfg.plan.handoff_s * factor
    duration = simulate(stage_loads, limited, cap, episodes=n, supervisor_s=supervisor_s, handoff_s=handoff_s)
    ranked = bounds(stage_loads, limited, cap, supervisor_s, n, handoff_s)
    notes = list(dict.fromkeys(w.note for _, group in groups for w in group if w.note))
    defaults = cfg.production.show_defaults()
    held = sum(1 for e in manifest.all_episodes()
               if resolve(defaults, manifest.show_of(e), hosts=cfg.production.hosts).review)
    if held:  # the duration above is the machine's: a person's review comes on top
        notes.append(f"{held} of {n} episode(s) wait in review/ after production: their speech is paid for "
                     "only once `podspool approve` sends them on")
    budget = manifest.budget_usd
    if budget is not None and cost["total"] > budget:
        per_episode = cost["total"] / n
        notes.append(f"budget ${budget:.2f} is below the planned ${cost['total']:.2f}: about "
                     f"{int(budget / per_episode) + 1 if per_episode else n} episodes start before the rest "
                     "are held (raise it with `podspool retry --batch ID --budget USD`)")
    return {
        "batch_id": batch_id or manifest.batch_id,
        "episodes": n,
        "strategy": strategy,
        "processes": {s.stage: s.processes for s in stage_loads},
        "calls": calls,
        "cost_usd": cost,
        "duration_s": round(duration, 2),
        "bound_by": _bound_by(ranked, n, duration),
        "episodes_per_hour": round(ranked[0].per_second * 3600, 1) if ranked else None,
        "bounds": [{"what": b.what, "episodes_per_hour": round(b.per_second * 3600, 1)} for b in ranked],
        "notes": notes,
        "review": held,
        "load_factor": round(factor, 2),
    }


def _duration(seconds: float) -> str:
    h, rem = divmod(int(round(seconds)), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


def render(plans: list[dict[str, Any]], cfg: Config) -> str:
    lines = []
    for p in plans:
        c = p["cost_usd"]
        procs = " / ".join(f"{p['processes'][s]}" for s in STAGE_NAMES)
        lines += [f"BATCH {p['batch_id'] or '(id given at intake)'}: {p['episodes']} episodes, {p['strategy']} "
                  f"(research / production / audio processes: {procs})",
                  f"  providers:  {cfg.research.provider} / {cfg.production.provider} / {cfg.audio.provider}",
                  "  API calls:  " + (", ".join(f"{api} {n}" for api, n in p["calls"].items()) or "none (offline)"),
                  f"  cost:       research ${c['research']:.4f}, production ${c['production']:.4f}, "
                  f"audio ${c['audio']:.4f}, total ${c['total']:.4f}",
                  f"  duration:   {_duration(p['duration_s'])}, from the first episode started to the last one done",
                  f"  bound by:   {p['bound_by']} ({p['episodes_per_hour']} episodes/hour at most)"]
        lines += [f"  note:       {n}" for n in p["notes"]]
        lines.append("")
    return "\n".join(lines)



def eta(episodes: list[tuple[str, EpisodeManifest]], strategy: str | None, cfg: Config) -> dict[str, Any] | None:
    """Seconds until a running batch is done: the plan's model over the episodes still to go, with each
    stage's time replaced by what this batch has measured so far, once it has measured it."""
    remaining = [STAGE_NAMES.index(loc) for loc, _ in episodes if loc in STAGE_NAMES]
    if not remaining:
        return None
    works = [stage_work(cfg, s) for s in STAGE_NAMES]
    measured: dict[str, float] = {}
    for w in works:
        seconds = [m.timings[w.stage].seconds for _, m in episodes
                   if w.stage in m.timings and m.timings[w.stage].seconds is not None]
        if seconds:
            # a measured stage time already holds its calls, the waits for their rate limit and the overhead
            measured[w.stage] = sum(seconds) / len(seconds)  # type: ignore[arg-type]
            w.latency_s = max(0.0, measured[w.stage] - getattr(cfg.plan.save_s, w.stage)) / max(1, w.calls)
    factor = load_factor(cfg)
    stage_loads = loads(cfg, strategy or "large_batch", works, factor)
    seconds_left = simulate(stage_loads, rates(cfg), cfg.limits.max_sessions_in_memory, positions=remaining,
                            supervisor_s=cfg.plan.supervisor_s * factor, handoff_s=cfg.plan.handoff_s * factor)
    return {"eta_seconds": round(seconds_left, 1),
            "eta_from": "measured " + ", ".join(measured) if measured else "plan (nothing measured yet)"}
