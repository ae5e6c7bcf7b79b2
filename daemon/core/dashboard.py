"""The batch production dashboard as plain text (dashboard.txt, `podspool status`)."""

from __future__ import annotations

from typing import Any


def _bar(done: int, total: int, width: int = 20) -> str:
    filled = round(width * done / total) if total else 0
    return "■" * filled + "□" * (width - filled)


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    h, rem = divmod(int(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def render_text(s: dict[str, Any]) -> str:
    p, c = s["progress"], s["costs"]
    nums = s.get("episodes_numbers") or [0]
    per_ep = c["total"] / max(1, p["completed"])
    budget = s.get("budget_usd")
    lines = [
        "BATCH PRODUCTION DASHBOARD",
        f"Batch ID: {s['batch_id']}   ({s.get('strategy') or '-'}, priority {s.get('priority', 0)})",
        f"Episodes: {nums[0]}-{nums[-1]}   state: {s['state']}",
        "",
        "PROGRESS",
        f"{_bar(p['completed'], p['total'])} {p['completed']}/{p['total']}",
        f"  Completed:   {p['completed']:4d}",
        f"  In progress: {p['in_progress']:4d}",
        f"  Waiting:     {p['waiting']:4d}" + (f"  (held by budget: {p['held']})" if p.get("held") else ""),
        *([f"  In review:   {p['review']:4d}  (podspool approve / reject)"] if p.get("review") else []),
        f"  Failed:      {p['failed']:4d}",
        "",
        "PERFORMANCE",
        f"  Rate: {s['episodes_per_hour']:.1f} episodes/hour",
        f"  ETA:  {_eta(s.get('eta_seconds'))}",
        "",
        "COSTS",
        f"  Research:    ${c['research']:.4f}",
        f"  Production:  ${c['production']:.4f}",
        f"  Audio:       ${c['audio']:.4f}",
        f"  Total:       ${c['total']:.4f}" + (f" of ${budget:.2f} budget" if budget is not None else ""),
        f"  Per episode: ${per_ep:.4f}",
    ]
    if s.get("over_budget"):
        lines.append(f"  BUDGET REACHED: waiting episodes held; raise with "
                     f"`podspool retry --batch {s['batch_id']} --budget USD`")
    lines += ["", "EPISODES"]
    for r in s.get("episodes", []):
        q = f"q={r['quality']:.2f}" if r.get("quality") is not None else ""
        lines.append(f"  {r['episode_id']:<40} {r['location']:<10} {'running' if r['running'] else r['status']:<11} "
                     f"${r['costs']['total']:.4f} {q}")
    return "\n".join(lines) + "\n"


def render_runtime(rt: dict[str, Any] | None) -> str:
    """The live part (`state/runtime.json`): only a running daemon has queues, workers and headroom."""
    if not rt:
        return "DAEMON\n  not running (no fresh state/runtime.json)\n"
    mem = rt["memory"]
    lines = [f"DAEMON  pid {rt['pid']}{'  (stopping: draining in-flight work)' if rt.get('stopping') else ''}",
             f"  Admitted:    {rt['admitted']}/{rt['max_sessions_in_memory']} episodes in flight",
             f"  Memory:      {mem['rss_mb']:.0f} MB of {mem['soft_mb']} MB soft limit"
             + ("  ADMISSION PAUSED" if mem.get("paused") else "") + f" (worker hard limit {mem['hard_mb']} MB)",
             "  Stage        queue  busy/procs/pool"]
    for stage, st in rt["stages"].items():
        lines.append(f"  {stage:<12} {st['queue']:5d}  {st['busy']:4d}/{st['processes']}/{st['pool_size']}")
    if rt.get("executor") == "dramatiq":  # remote workers, from their heartbeats in Redis
        lines.append(f"  Workers ({len(rt.get('workers', []))})   host/pid  stages  busy  last heartbeat")
        for w in rt.get("workers", []):
            age = max(0.0, rt["time"] - w["last_heartbeat"])
            lines.append(f"  {w['host']}/{w['pid']}  {w['stage']}  {w['busy']}  {age:.0f}s ago")
    lines.append("  Rate limits  used/limit per window  headroom")
    for api, r in rt["rate_limits"].items():
        paused = f"  paused {r['paused_s']:.0f}s (Retry-After)" if r.get("paused_s") else ""
        lines.append(f"  {api:<12} {r['used']:5d}/{r['limit']} per {r['window_s']:g}s  {r['headroom']}{paused}")
    return "\n".join(lines) + "\n"
