"""`podspool feed` and `podspool archive`: publishing what is finished."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from podspool.daemon.cli import exitcodes
from podspool.daemon.cli.common import ConfigOpt, SpoolOpt, config_or_exit, fail
from podspool.daemon.config import spool_root
from podspool.daemon.spool import Spool


def feed(spool: SpoolOpt = None, config: ConfigOpt = None,
         base_url: Annotated[str | None, typer.Option("--base-url", help="where <spool>/feed/ is served "
                                                                         "(default [publish] base_url)")] = None,
         check: Annotated[bool, typer.Option("--check", help="write nothing: name every problem against Apple "
                                                             "Podcasts' and Podcasting 2.0's rules, exit 2 "
                                                             "when any")] = False,
         force: Annotated[bool, typer.Option("--force", help="write the feed even when --check finds "
                                                             "problems")] = False,
         ) -> None:
    """Write <spool>/feed/feed.xml, the podcast feed of every finished episode (done/ and the archive)."""
    from podspool.daemon.config import config_path
    from podspool.daemon.publishing import checks
    from podspool.daemon.publishing.feed import channel_language, entries, write_feed

    root = spool_root(spool)
    if not (root / "batches").is_dir():
        raise fail(exitcodes.USAGE, f"{root} is not a podspool spool (no batches/ folder)")
    cfg = config_or_exit(root, config)
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        raise fail(exitcodes.USAGE, f"--base-url must be an http(s) URL, not {base_url!r}")
    found = config_path(config, root)
    items = entries(root, cfg.production)
    report = checks.prepare(cfg.publish, base_url, items, found.parent if found else Path.cwd(),
                            channel_language(cfg.publish.language, items, cfg.production.language))
    for note in report.notes:
        typer.echo(f"note: {note}")
    if report.problems:
        typer.echo(f"feed: {len(report.problems)} problem(s) against Apple Podcasts' and Podcasting 2.0's "
                   f"rules:", err=True)
        for problem in report.problems:
            typer.echo(f"  - {problem}", err=True)
    if check:
        if not report.problems:
            typer.echo(f"feed: no problems ({len(items)} episodes)")
        raise typer.Exit(exitcodes.USAGE if report.problems else exitcodes.OK)
    if report.problems and not force:
        raise fail(exitcodes.USAGE, "feed.xml not written: fix the problems above, or write it anyway with --force")
    try:
        path = write_feed(root, report.channel, items)
    except OSError as exc:
        raise fail(exitcodes.FAILURE, f"cannot write the feed: {exc}") from None
    typer.echo(f"{path}: {len(items)} episodes")


def archive(batch: Annotated[str | None, typer.Option("--batch", help="this finished batch")] = None,
            older_than: Annotated[float | None, typer.Option("--older-than", help="every batch finished at "
                                                                                "least DAYS ago")] = None,
            spool: SpoolOpt = None) -> None:
    """Move finished batches (episode folders and batch folder) under <spool>/archive/<batch_id>/."""
    from podspool.daemon.core import control
    from podspool.daemon.observers.logs import setup
    from podspool.daemon.publishing import archive as archiving
    from podspool.daemon.spool import SpoolLocked

    if batch is None and older_than is None:
        raise fail(exitcodes.USAGE, "name --batch ID or --older-than DAYS")
    if older_than is not None and not 0 <= older_than < float("inf"):
        raise fail(exitcodes.USAGE, "--older-than must be a finite number of days >= 0")
    root = spool_root(spool)
    if batch and not (root / "batches" / batch).is_dir() and not archiving.archived_batch_dir(root, batch).is_dir():
        raise fail(exitcodes.USAGE, f"no batch {batch!r} in {root}")
    sp = Spool(root)
    try:
        sp.ensure()
        sp.lock()
    except SpoolLocked:
        # the daemon is the only writer of its spool: it archives between its own moves
        control.submit(sp, {"archive": {"batch": batch, "older_than_days": older_than}})
        typer.echo("sent to the running daemon; `podspool status` shows the batch as archived once it is done")
        return
    setup(sp.logs, level="INFO", stderr=False)
    wanted = archiving.archivable(root, older_than)
    if batch:
        if older_than is not None and batch not in wanted:
            raise fail(exitcodes.USAGE, f"batch {batch} did not finish {older_than:g} days ago or more")
        wanted = [batch]
    for bid in wanted:
        try:
            moved = archiving.archive_batch(root, bid)
        except archiving.NotArchivable as exc:
            raise fail(exitcodes.USAGE, str(exc)) from None
        typer.echo(f"{bid}: archived in {archiving.archive_dir(root, bid)} ({len(moved)} episode folders moved)")
    if not wanted:
        typer.echo(f"no finished batch is {older_than:g} days old or more")
