"""The pipeline model behind `podspool plan` and the ETA of `podspool status`: pure, no clock, no I/O.

A batch runs through three stages, each with a number of worker processes (servers). An episode's task
at a stage makes `calls` provider calls one after the other; each call first waits for its API's
sliding-window rate limit (the daemon's own rule, `Rate.span_s` included), then takes `latency_s`.
At most `session_cap` episodes are in flight at once (admitted at their first stage, released when
the last one ends), and the supervisor hands out work as the daemon does: later stages first, then
episode number. A closed formula misjudges small batches (pipeline fill and drain dominate them) and
rate limits that let a burst through and then wait a whole window, so this simulates the batch event
by event instead; `bounds` gives the steady-state figure that names what limits it.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from podspool.daemon.ratelimit.window import Rate


@dataclass(frozen=True)
class StageLoad:
    """One stage's work for one episode, and the processes the batch may use for it."""

    stage: str
    processes: int
    calls: int  # provider calls per episode, in sequence
    latency_s: float  # per call, once the rate limit lets it start
    api: str | None = None  # the rate-limited API those calls go to (None: not limited)
    save_s: float = 0.0  # the worker's own work after its calls (validate, write whole); overlaps the next call
    warmup_s: float = 0.0  # added to the save of each worker's first task (imports on first use)

    @property
    def call_s(self) -> float:
        """How long a task holds its process: the next task's call starts as this one's calls end (once
        the task before has saved: a worker holds two tasks at most)."""
        return self.calls * self.latency_s

    @property
    def latency_of_task_s(self) -> float:
        return self.call_s + self.save_s


@dataclass
class Bound:
    """Episodes per second that one resource allows in steady state, and its name for an operator."""

    what: str
    per_second: float


@dataclass
class _Limiter:
    rate: Rate
    starts: deque[float] = field(default_factory=deque)

    def earliest(self, t: float) -> float:
        # the daemon's rule: a start may go once the limit-th most recent start has left the window
        if len(self.starts) < self.rate.limit:
            return t
        return max(t, self.starts[0] + self.rate.span_s)

    def take(self, t: float) -> None:
        self.starts.append(t)
        if len(self.starts) > self.rate.limit:
            self.starts.popleft()


def bounds(stages: list[StageLoad], rates: dict[str, Rate], session_cap: int,
           supervisor_s: float = 0.0, episodes: int | None = None, handoff_s: float = 0.0) -> list[Bound]:
    """The steady-state throughput each resource allows; the smallest one bounds the batch."""
    out = [Bound(f"{s.stage} processes ({s.processes})", s.processes / max(s.call_s, s.save_s))
           for s in stages if max(s.call_s, s.save_s) > 0]
    calls_per_api: dict[str, int] = {}
    for s in stages:
        if s.api in rates:
            calls_per_api[s.api] = calls_per_api.get(s.api, 0) + s.calls
    for api, calls in calls_per_api.items():
        r = rates[api]
        if calls and (episodes is None or calls * episodes > r.limit):  # a batch that fits one window is not held
            out.append(Bound(f"rate limit {api} ({r.limit} per {r.window_s:g}s)", r.limit / r.span_s / calls))
    in_flight = sum(s.latency_of_task_s for s in stages) + max(supervisor_s, handoff_s) * len(stages)
    if in_flight > 0:
        out.append(Bound(f"max_sessions_in_memory ({session_cap})", session_cap / in_flight))
    if supervisor_s > 0:
        out.append(Bound("the supervisor's own work (one process records every result)",
                         1 / (supervisor_s * len(stages))))
    return sorted(out, key=lambda b: b.per_second)


def simulate(stages: list[StageLoad], rates: dict[str, Rate], session_cap: int, episodes: int = 0,
             positions: list[int] | None = None, supervisor_s: float = 0.0, handoff_s: float = 0.0) -> float:
    """Seconds from the first task's start to the last episode's end.

    Every task is handed over and its result recorded by the supervisor, one process doing one thing at
    a time (`supervisor_s` a task in all, the throughput it costs) before the episode moves on (`handoff_s` after it was saved, at
    least: the latency of the hand-over): with fast stages, the supervisor is what bounds a batch.

    `positions`, when given, holds the stage index each remaining episode waits at (0 = not started,
    counted against the session cap when it starts; more = already admitted); else `episodes` new ones.
    """
    queue: list[list[int]] = [[] for _ in stages]  # episode numbers waiting at each stage
    todo = positions if positions is not None else [0] * episodes
    for n, pos in enumerate(todo):
        queue[pos].append(n)
    admitted = sum(1 for pos in todo if pos > 0)
    idle = [list(range(s.processes)) for s in stages]  # worker numbers free for a new task, per stage
    # a worker takes its next task while the last one saves, but never a third: it waits for that save
    saving_until = [[0.0] * s.processes for s in stages]
    warm = [[False] * s.processes for s in stages]
    limiters = {api: _Limiter(rate) for api, rate in rates.items()}
    events: list[tuple[float, int, str, int, int, int, int]] = []  # time, seq, kind, stage, episode, call, worker
    seq = 0
    now = 0.0
    end = 0.0
    supervisor_free = 0.0

    def push(t: float, kind: str, stage: int, ep: int, call: int = 0, worker: int = 0) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, stage, ep, call, worker))

    def dispatch(t: float) -> None:
        nonlocal admitted, supervisor_free
        for i in reversed(range(len(stages))):  # later stages first, as the supervisor does
            while idle[i] and queue[i]:
                if i == 0 and admitted >= session_cap:
                    break
                ep = min(queue[i])
                queue[i].remove(ep)
                if i == 0:
                    admitted += 1
                # handing a task over is the supervisor's work too (it writes the manifest first)
                supervisor_free = max(t, supervisor_free) + supervisor_s / 2
                push(supervisor_free, "call", i, ep, 0, idle[i].pop())

    dispatch(0.0)
    while events:
        now, _, kind, i, ep, call, w = heapq.heappop(events)
        s = stages[i]
        if kind == "call":
            if call >= s.calls:  # its calls are over: the worker may take the next task while this one saves
                # one save at a time per worker: this one starts when the task before has saved
                started = max(now, saving_until[i][w])
                push(started, "idle", i, ep, 0, w)
                saving_until[i][w] = started + s.save_s + (0.0 if warm[i][w] else s.warmup_s)
                warm[i][w] = True
                push(saving_until[i][w], "saved", i, ep)
                continue
            lim = limiters.get(s.api) if s.api else None
            if lim is not None:
                start = lim.earliest(now)
                if start > now:  # wait, then ask again (others may have taken the slot meanwhile)
                    push(start, "call", i, ep, call, w)
                    continue
                lim.take(now)
            push(now + s.latency_s, "call", i, ep, call + 1, w)
            continue
        if kind == "idle":
            idle[i].append(w)
            dispatch(now)
            continue
        if kind == "saved":  # in line for the supervisor, which records one result at a time
            supervisor_free = max(now, supervisor_free) + supervisor_s / 2
            push(max(supervisor_free, now + handoff_s), "done", i, ep)
            continue
        # done: recorded and moved on
        if i + 1 < len(stages):
            queue[i + 1].append(ep)
        else:
            admitted -= 1
            end = max(end, now)
        dispatch(now)
    return end
