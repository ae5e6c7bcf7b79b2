"""`podspool approve`, `reject` and `redo`: a producer's hand on episodes, with or without a running daemon.

Each checks the episodes first and moves nothing when any is unknown or not eligible (exit 2). With a
daemon running it sends a control request (the daemon is the only writer of the spool, and checks
again); with none, it takes the spool lock and applies the change itself.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from podspool.daemon.cli import exitcodes
from podspool.daemon.cli.common import ConfigOpt, SpoolOpt, config_or_exit, fail
from podspool.daemon.config import Config, spool_root
from podspool.daemon.spool import FINAL, Location, Spool

Episodes = Annotated[list[str] | None, typer.Argument(help="episode ids", show_default=False)]
BatchOpt = Annotated[str | None, typer.Option("--batch", help="every eligible episode of this batch")]


def approve(episodes: Episodes = None, batch: BatchOpt = None, spool: SpoolOpt = None,
            config: ConfigOpt = None) -> None:
    """Send reviewed episodes on to audio; an edited script.md is normalised and re-checked first."""
    from podspool.daemon.core import review

    sp, cfg = _open(episodes, batch, spool, config)
    found, problems = review.find(sp, list(episodes or []), batch, (Location.REVIEW,), "approve")
    checked = {}
    for f in found:
        _, refusal = review.check_edit(f.folder, f.manifest, cfg)
        if refusal:
            problems.append(f"{f.episode_id}: {refusal}; it stays in review")
        checked[f.episode_id] = review.script_hash(f.folder / "script.md")
    _refuse(problems)
    _apply(sp, cfg, {"action": "approve", "episodes": [f.episode_id for f in found], "checked": checked})


def reject(episodes: Episodes = None, batch: BatchOpt = None,
           note: Annotated[str, typer.Option("--note", help="what the writer should change")] = "",
           fail_: Annotated[bool, typer.Option("--fail", help="to failed/ instead of back to production")] = False,
           spool: SpoolOpt = None, config: ConfigOpt = None) -> None:
    """Send reviewed episodes back to production with the note as the writer's feedback (or to failed/)."""
    from podspool.daemon.core import review

    if not note.strip() and not fail_:
        raise fail(exitcodes.USAGE, "say what to change with --note TEXT (or --fail)")
    if len(note) > 4000:
        raise fail(exitcodes.USAGE, "--note is limited to 4000 characters")
    sp, cfg = _open(episodes, batch, spool, config)
    found, problems = review.find(sp, list(episodes or []), batch, (Location.REVIEW,), "reject")
    _refuse(problems)
    _apply(sp, cfg, {"action": "reject", "episodes": [f.episode_id for f in found], "note": note.strip(),
                     "fail": fail_})


def redo(episodes: Episodes = None, batch: BatchOpt = None,
         from_: Annotated[str, typer.Option("--from", help="research, production or audio")] = "",
         spool: SpoolOpt = None, config: ConfigOpt = None) -> None:
    """Run done or failed episodes again from a stage, reusing what came before; the previous published
    files are kept under the episode's versions/<n>/."""
    from podspool.daemon.core import review
    from podspool.stages.base import STAGE_NAMES

    if from_ not in STAGE_NAMES:
        raise fail(exitcodes.USAGE, f"--from must be one of {', '.join(STAGE_NAMES)}")
    sp, cfg = _open(episodes, batch, spool, config)
    found, problems = review.find(sp, list(episodes or []), batch, FINAL, "redo")
    _refuse(problems)
    _apply(sp, cfg, {"action": "redo", "episodes": [f.episode_id for f in found], "from": from_})


def _open(episodes: list[str] | None, batch: str | None, spool: str | None,
          config: str | None) -> tuple[Spool, Config]:
    if not episodes and not batch:
        raise fail(exitcodes.USAGE, "name episodes or --batch ID")
    root = spool_root(spool)
    if not (root / "batches").is_dir():
        raise fail(exitcodes.USAGE, f"{root} is not a podspool spool (no batches/ folder)")
    return Spool(root), config_or_exit(root, config)


def _refuse(problems: list[str]) -> None:
    if problems:
        for p in problems:
            typer.echo(f"  - {p}", err=True)
        raise fail(exitcodes.USAGE, "nothing moved")


def _apply(sp: Spool, cfg: Config, request: dict[str, Any]) -> None:
    from podspool.daemon.core import control, review
    from podspool.daemon.observers.logs import setup
    from podspool.daemon.spool import SpoolLocked

    try:
        sp.ensure()
        sp.lock()
    except SpoolLocked:
        control.submit(sp, {"review": request})
        typer.echo(f"sent to the running daemon: {request['action']} {' '.join(request['episodes'])}")
        return
    setup(sp.logs, level="INFO", stderr=False)
    moved = review.offline({"review": request}, sp, cfg)
    for eid, where in moved:
        typer.echo(f"{eid}: now in {where}")
    if len(moved) < len(request["episodes"]):
        raise fail(exitcodes.USAGE, "some episodes were refused (see the log)")
