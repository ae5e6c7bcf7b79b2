"""The `podspool` command line (typer): run, submit, validate, status, plan, retry, feed, archive, schema, doctor,
worker."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from podspool.daemon.cli import exitcodes
from podspool.daemon.cli import publish as cli_publish
from podspool.daemon.cli import review as cli_review
from podspool.daemon.cli import worker as cli_remote
from podspool.daemon.cli.common import ConfigOpt, SpoolOpt, config_or_exit, fail
from podspool.daemon.config import Config, ConfigError, config_path, load_config, spool_root
from podspool.daemon.models import BatchManifest
from podspool.daemon.spool import Spool

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="podspool: a crash-safe spool daemon that batch-produces podcast episodes.")


@app.callback()
def _every_command(ctx: typer.Context) -> None:
    """An operator's command prints its own results: a library's debug line (espeak's start, say) is not
    one, so stderr shows warnings and worse, masked as the daemon's log is. `run` and `worker` set their
    own logging."""
    if ctx.invoked_subcommand not in ("run", "worker"):
        from podspool.daemon.observers.logs import setup

        setup(None, level="WARNING")


def _with_daemon_roots(cfg: Config, spool: Path) -> Config:
    """The daemon's config with its allowed source roots spelled out (granted folders included)."""
    from podspool.daemon.intake.validate import daemon_roots

    roots = [str(r) for r in daemon_roots(cfg.research.source_roots, spool)]
    return cfg.model_copy(update={"research": cfg.research.model_copy(update={"source_roots": roots})})


@app.command()
def run(spool: SpoolOpt = None, config: ConfigOpt = None,
        once: Annotated[bool, typer.Option("--once", help="take the inbox, carry every episode as far as it "
                                                         "can go, then exit")] = False,
        log_json: Annotated[bool, typer.Option("--log-json", help="log one JSON object per line")] = False) -> None:
    """Run the daemon in the foreground."""
    from podspool.daemon.core.supervisor import Supervisor
    from podspool.daemon.credentials import load_secrets
    from podspool.daemon.observers.logs import setup
    from podspool.daemon.spool import SpoolLocked

    os.umask(0o027)  # nothing the daemon creates is world-readable
    root = spool_root(spool)
    configured = config_or_exit(root, config)
    cfg = _with_daemon_roots(configured, root)
    sp = Spool(root)
    try:
        sp.ensure()
        sp.lock()
    except SpoolLocked:
        raise fail(exitcodes.LOCKED, f"another daemon already owns the spool {root}") from None
    except OSError as exc:
        raise fail(exitcodes.FAILURE, f"cannot use the spool {root}: {exc}") from None
    secrets = load_secrets()
    sup_ref: list[Supervisor] = []

    def folder_of(eid: str) -> Path | None:
        w = sup_ref[0].episodes.get(eid) if sup_ref else None  # finished episodes log to their folder no more
        return sp.folder(w.location, eid) if w is not None else None

    lg = cfg.logging
    setup(sp.logs, level=lg.level, rotation=lg.rotation, retention=lg.retention, compression=lg.compression,
          as_json=lg.as_json or log_json, stderr=lg.stderr, secrets=secrets, episode_folder=folder_of)

    latest = [configured]  # the configuration as written, as of the last (re)load

    def reload() -> Config:  # SIGHUP
        latest[0] = load_config(config_path(config, root))
        return _with_daemon_roots(latest[0], root)

    def source_roots() -> list[str] | None:  # none configured: the working directory and the granted folders
        if latest[0].research.source_roots:
            return None
        return list(_with_daemon_roots(latest[0], root).research.source_roots)

    executor = None
    if cfg.executor.kind == "dramatiq":  # stage work on Dramatiq workers over Redis (daemon/executors/remote/)
        try:
            from podspool.daemon.executors.remote.executor import DramatiqExecutor
        except ImportError as exc:
            raise fail(exitcodes.USAGE, f"[executor] kind = \"dramatiq\" needs {exc.name}: "
                                         "pip install 'podspool[dramatiq]'") from None
        from podspool.daemon.executors.remote.wire import KeyMissing

        try:
            executor = DramatiqExecutor(cfg, sp.state, secrets)
        except KeyMissing as exc:  # no broker key: nothing could be signed, so nothing could run
            raise fail(exitcodes.USAGE, str(exc)) from None
    sup = Supervisor(sp, cfg, once=once, secrets=secrets, reload_config=reload, executor=executor,
                     source_roots=source_roots)
    sup_ref.append(sup)
    from podspool.daemon.observers.build import build_hooks

    sup.observers.hooks += build_hooks(sp, cfg, secrets)  # runtime view, metrics, timeline, webhook alerts
    try:
        code = sup.run()
    except Exception as exc:  # catastrophic: log it, exit non-zero so systemd restarts us
        from loguru import logger

        logger.opt(exception=exc).critical("podspool crashed: {}", exc)
        sup.observers.emit("on_crash", exc)  # guarded: an observer cannot turn a crash into a hang or a second crash
        raise typer.Exit(exitcodes.FAILURE) from None
    raise typer.Exit(code)


def _check_files(files: list[Path], cfg: Config,
                 spool: Path | None) -> tuple[list[tuple[Path, BatchManifest, bytes]], bool]:
    """Check each manifest as `podspool submit` would: sources relative to its own folder, and the
    batch possible with the configured providers. Prints every problem of every file."""
    from podspool.daemon.intake.validate import (
        ManifestProblem,
        check_file,
        submit_roots,
        with_absolute_sources,
    )

    ok: list[tuple[Path, BatchManifest, bytes]] = []
    bad = False
    for f in files:
        base = f.absolute().parent
        roots = submit_roots(cfg.research.source_roots, base)
        try:
            checked = check_file(f, cfg.limits.max_manifest_bytes, roots, base, cfg.research, cfg.stage_settings())
        except ManifestProblem as exc:
            bad = True
            typer.echo(f"{f}: invalid", err=True)
            for p in exc.problems:
                typer.echo(f"  - {p}", err=True)
            continue
        bid = checked.manifest.batch_id
        if spool is not None and bid and Spool(spool).known_batch(bid):
            bad = True
            typer.echo(f"{f}: invalid\n  - batch_id: {bid!r} is already known in {spool}", err=True)
            continue
        ok.append((f, with_absolute_sources(checked.manifest, roots, base), checked.raw))
    return ok, bad


@app.command()
def validate(files: Annotated[list[Path], typer.Argument(help="batch manifests")],
             config: ConfigOpt = None) -> None:
    """Validate batch manifests; exit 2 when any is invalid, naming each problem."""
    cfg = config_or_exit(spool_root(None), config)
    ok, bad = _check_files(files, cfg, None)
    for f, m, _ in ok:
        typer.echo(f"{f}: valid ({len(m.all_episodes())} episodes)")
    raise typer.Exit(exitcodes.USAGE if bad else exitcodes.OK)


@app.command()
def submit(files: Annotated[list[Path], typer.Argument(help="batch manifests")], spool: SpoolOpt = None,
           config: ConfigOpt = None) -> None:
    """Validate, then place atomically in the inbox; prints each batch_id."""
    from podspool.daemon.intake.validate import grant_root
    from podspool.daemon.models import default_batch_id
    from podspool.stages import fsio
    from podspool.stages.sources.resolve import is_url

    root = spool_root(spool)
    cfg = config_or_exit(root, config)
    ok, bad = _check_files(files, cfg, root)
    if bad:
        raise typer.Exit(exitcodes.USAGE)
    inbox = root / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    for f, manifest, _raw in ok:
        bid = manifest.batch_id or default_batch_id()
        n = 1
        while (inbox / f"{bid}.json").exists() or Spool(root).known_batch(bid):
            if manifest.batch_id:
                raise fail(exitcodes.USAGE, f"batch {bid} is already waiting in {inbox}")
            n += 1
            bid = f"{default_batch_id()}_{n}"
        doc = manifest.model_copy(update={"batch_id": bid}).model_dump(mode="json", exclude_none=True)
        # written whole under a dot-name the daemon ignores, then renamed in: the daemon never sees half a file
        tmp = inbox / f".{bid}.json.part"
        fsio.write_json(tmp, doc)
        if not cfg.research.source_roots and not all(is_url(s) for ep in manifest.episodes for s in ep.sources):
            # its sources were checked against its own folder: the daemon must allow that folder too, for
            # these bytes only, before it can read them (a running daemon reads the grants first)
            grant_root(root, f.absolute().parent.resolve(), manifest=tmp.read_bytes())
        os.rename(tmp, inbox / f"{bid}.json")
        fsio.fsync_dir(inbox)
        typer.echo(bid)


@app.command()
def plan(files: Annotated[list[Path], typer.Argument(help="batch manifests")], spool: SpoolOpt = None,
         config: ConfigOpt = None,
         as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False) -> None:
    """Predict each batch's API calls, cost per stage, duration and what bounds it; nothing is spent."""
    from podspool.daemon.cli.plan import plan_batch, render

    cfg = config_or_exit(spool_root(spool), config)
    ok, bad = _check_files(files, cfg, None)
    plans = [plan_batch(m, cfg) for _, m, _ in ok]
    if as_json:
        typer.echo(json.dumps({"batches": plans}, indent=2))
    else:
        typer.echo(render(plans, cfg), nl=False)
    raise typer.Exit(exitcodes.USAGE if bad else exitcodes.OK)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the batch manifest."""
    from podspool.daemon.models import manifest_schema

    typer.echo(json.dumps(manifest_schema(), indent=2))


@app.command()
def status(spool: SpoolOpt = None, batch: Annotated[str | None, typer.Option("--batch")] = None,
           as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
           watch: Annotated[bool, typer.Option("--watch", help="refresh live until Ctrl-C")] = False,
           interval: Annotated[float, typer.Option("--interval")] = 2.0, config: ConfigOpt = None) -> None:
    """The batch production dashboard, and what will happen to the manifests waiting in the inbox."""
    from podspool.daemon.cli.status import collect, render
    from podspool.daemon.publishing.archive import archived_batch_dir

    root = spool_root(spool)
    # a spool no daemon has run on yet (or no spool at all) is not an error: it shows what is queued
    cfg = _with_daemon_roots(config_or_exit(root, config), root)
    data = collect(root, batch, cfg)
    if batch and not data["batches"] and not data.get("queued") and not (root / "batches" / batch).is_dir() \
            and not archived_batch_dir(root, batch).is_dir():
        raise fail(exitcodes.USAGE, f"no batch {batch!r} in {root} (nor waiting in its inbox)")
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    if not watch:
        typer.echo(render(data))
        return
    from podspool.daemon.cli.live import watch as live_watch

    live_watch(root, batch, interval)


@app.command()
def retry(episodes: Annotated[list[str] | None, typer.Argument(help="episode ids")] = None,
          batch: Annotated[str | None, typer.Option("--batch")] = None,
          all_: Annotated[bool, typer.Option("--all", help="every failed episode")] = False,
          budget: Annotated[float | None, typer.Option("--budget", help="the batch's new budget in USD")] = None,
          spool: SpoolOpt = None, config: ConfigOpt = None) -> None:
    """Move failed episodes back to the stage they failed in; --budget sets a batch's new budget."""
    from podspool.daemon.core import control
    from podspool.daemon.core import retry as retrying
    from podspool.daemon.observers.logs import setup
    from podspool.daemon.spool import SpoolLocked

    if not episodes and not batch and not all_:
        raise fail(exitcodes.USAGE, "name episodes, --batch ID or --all")
    if budget is not None and not batch:
        raise fail(exitcodes.USAGE, "--budget needs --batch ID")
    if budget is not None and (budget < 0 or budget != budget or budget == float("inf")):
        raise fail(exitcodes.USAGE, "--budget must be a finite number >= 0")
    root = spool_root(spool)
    sp = Spool(root)
    if batch and not (root / "batches" / batch).is_dir():
        raise fail(exitcodes.USAGE, f"no batch {batch!r} in {root}")
    body = {"episodes": episodes or [], "batch": batch, "all": all_, "budget": budget}
    cfg = config_or_exit(root, config)
    try:
        sp.ensure()
        sp.lock()
    except SpoolLocked:
        control.submit(sp, body)
        typer.echo("sent to the running daemon")
        return
    setup(sp.logs, level="INFO", stderr=False)
    moved = retrying.offline(body, sp, cfg.limits.checkpoint_every)
    for eid, where in moved:
        typer.echo(f"{eid}: back in {where}")
    if budget is not None:
        typer.echo(f"{batch}: budget ${budget:.2f}")
    if not moved and budget is None:
        raise fail(exitcodes.USAGE, "no failed episode matched")


@app.command()
def doctor(spool: SpoolOpt = None, config: ConfigOpt = None) -> None:
    """Check config, spool permissions, providers and keys; exit 1 when something would fail."""
    from podspool.daemon.cli.doctor import run_checks

    root = spool_root(spool)
    try:
        cfg = load_config(config_path(config, root))
    except ConfigError as exc:
        typer.echo(f"FAIL config: {exc}")
        raise typer.Exit(exitcodes.FAILURE) from None
    ok = run_checks(root, cfg, typer.echo)
    raise typer.Exit(exitcodes.OK if ok else exitcodes.FAILURE)


# commands of their own concern, in their own modules
app.command()(cli_publish.feed)
app.command()(cli_publish.archive)
app.command()(cli_review.approve)
app.command()(cli_review.reject)
app.command()(cli_review.redo)
app.command()(cli_remote.worker)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
