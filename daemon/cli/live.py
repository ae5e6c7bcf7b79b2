"""`podspool status --watch`: the batch production dashboard, live in the terminal (rich).

Reads only the spool (daemon.status.collect), so it works with or without a running daemon and
never needs to talk to one; with a daemon, its runtime.json adds queues, workers, headroom, memory.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from podspool.daemon.cli.status import collect
from podspool.daemon.core.dashboard import _eta
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

MAX_EPISODE_ROWS = 12


def _batch_panel(s: dict[str, Any]) -> Panel:
    p, c = s["progress"], s["costs"]
    total = max(1, p["total"])
    head = Table.grid(padding=(0, 2))
    head.add_row(ProgressBar(total=total, completed=p["completed"] + p["failed"], width=40),
                 Text(f"{p['completed']}/{p['total']} done", style="bold"))
    counts = Table.grid(padding=(0, 3))
    counts.add_row(Text(f"completed {p['completed']}", style="green"),
                   Text(f"in progress {p['in_progress']}", style="cyan"),
                   Text(f"waiting {p['waiting']}"),
                   Text(f"held {p['held']}", style="yellow" if p["held"] else ""),
                   Text(f"failed {p['failed']}", style="red" if p["failed"] else ""))
    perf = Text(f"{s['episodes_per_hour']:.1f} episodes/hour   ETA {_eta(s.get('eta_seconds'))}   state {s['state']}")
    costs = Table("stage", "USD", box=None, padding=(0, 2))
    for stage in ("research", "production", "audio", "total"):
        costs.add_row(stage, f"{c[stage]:.4f}")
    budget = s.get("budget_usd")
    costs.add_row("per episode", f"{c['total'] / max(1, p['completed']):.4f}")
    if budget is not None:
        costs.add_row("budget", f"{float(budget):.2f}" + ("  REACHED" if s.get("over_budget") else ""))
    eps = Table("episode", "where", "status", "USD", "quality", box=None, padding=(0, 2))
    rows = sorted(s.get("episodes", []), key=lambda r: (not r["running"], r["location"] in ("done", "failed"),
                                                        r["number"]))
    for r in rows[:MAX_EPISODE_ROWS]:
        style = "cyan" if r["running"] else "red" if r["location"] == "failed" else ""
        q = f"{r['quality']:.2f}" if r.get("quality") is not None else ""
        eps.add_row(r["episode_id"], r["location"], "running" if r["running"] else r["status"],
                    f"{r['costs']['total']:.4f}", q, style=style)
    if len(rows) > MAX_EPISODE_ROWS:
        eps.add_row(f"… {len(rows) - MAX_EPISODE_ROWS} more", "", "", "", "")
    title = f"Batch {s['batch_id']} ({s.get('strategy') or '-'}, priority {s.get('priority', 0)})"
    return Panel(Group(head, counts, perf, Text(""), costs, Text(""), eps), title=title, title_align="left")


def _runtime_panel(rt: dict[str, Any] | None) -> Panel:
    if not rt:
        return Panel(Text("no running daemon (no fresh state/runtime.json)", style="dim"), title="Daemon",
                     title_align="left")
    stages = Table("stage", "queue", "busy", "processes", "pool", box=None, padding=(0, 2))
    for stage, st in rt["stages"].items():
        stages.add_row(stage, str(st["queue"]), str(st["busy"]), str(st["processes"]), str(st["pool_size"]))
    rates = Table("API", "used", "limit", "window", "headroom", box=None, padding=(0, 2))
    for api, r in rt["rate_limits"].items():
        style = "red" if r["headroom"] == 0 or r.get("paused_s") else ""
        rates.add_row(api, str(r["used"]), str(r["limit"]), f"{r['window_s']:g}s",
                      f"{r['headroom']}" + (f" paused {r['paused_s']:.0f}s" if r.get("paused_s") else ""), style=style)
    mem = rt["memory"]
    soft = float(mem["soft_mb"])
    memory = Table.grid(padding=(0, 2))
    memory.add_row(Text("memory"), ProgressBar(total=soft, completed=min(soft, float(mem["rss_mb"])), width=30),
                   Text(f"{mem['rss_mb']:.0f}/{mem['soft_mb']} MB soft (worker hard {mem['hard_mb']} MB)"
                        + ("  ADMISSION PAUSED" if mem.get("paused") else ""),
                        style="red" if mem.get("paused") else ""))
    memory.add_row(Text("admitted"), ProgressBar(total=rt["max_sessions_in_memory"], completed=rt["admitted"], width=30),
                   Text(f"{rt['admitted']}/{rt['max_sessions_in_memory']} episodes in flight"))
    title = f"Daemon pid {rt['pid']}" + ("  stopping" if rt.get("stopping") else "")
    return Panel(Group(stages, Text(""), rates, Text(""), memory), title=title, title_align="left")


def dashboard(data: dict[str, Any]) -> RenderableType:
    panels: list[RenderableType] = [_batch_panel(s) for s in data["batches"]]
    if not panels:
        panels.append(Text(f"no batches in {data['spool']}"))
    panels.append(_runtime_panel(data.get("runtime")))
    stamp = time.strftime("%H:%M:%S")
    panels.append(Text(f"{data['spool']}   updated {stamp}   Ctrl-C to quit", style="dim"))
    return Group(*panels)


def watch(root: Path, batch: str | None, interval: float = 2.0, console: Console | None = None) -> None:
    """Refresh until Ctrl-C."""
    console = console or Console()
    with Live(dashboard(collect(root, batch)), console=console, screen=False, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(max(0.2, interval))
                live.update(dashboard(collect(root, batch)), refresh=True)
        except KeyboardInterrupt:
            pass
