"""`podspool worker`: Dramatiq workers for the stage work of a `kind = "dramatiq"` supervisor."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from podspool.daemon.cli import exitcodes
from podspool.daemon.cli.common import ConfigOpt, config_or_exit, fail
from podspool.daemon.config import config_path, spool_root


def worker(stage: Annotated[list[str] | None, typer.Option("--stage", help="research, production or audio "
                                                                          "(repeatable; default: all three)")] = None,
           processes: Annotated[int, typer.Option("--processes", min=1, help="worker processes")] = 1,
           threads: Annotated[int | None, typer.Option("--threads", min=1, help="threads per process "
                                                                              "(default: executor.threads)")] = None,
           config: ConfigOpt = None) -> None:
    """Run Dramatiq workers for stage work of a `kind = "dramatiq"` supervisor (on any host that reaches Redis)."""
    from podspool.stages.base import STAGE_NAMES

    stages = stage or list(STAGE_NAMES)
    unknown = [s for s in stages if s not in STAGE_NAMES]
    if unknown:
        raise fail(exitcodes.USAGE, f"--stage must be one of {', '.join(STAGE_NAMES)}, not {', '.join(unknown)}")
    path = config_path(config, spool_root(None))
    cfg = config_or_exit(spool_root(None), config)
    # dramatiq reads its idle poll interval from the environment once, when first imported: set it first
    os.environ["dramatiq_worker_timeout"] = str(cfg.executor.idle_poll_ms)  # noqa: SIM112  (its spelling)
    # and how many messages a queue's consumer holds: dramatiq's default (2 x threads per queue) lets one
    # host hoard work while another idles, and leaves more to redeliver when a host dies
    os.environ["dramatiq_queue_prefetch"] = str(threads or cfg.executor.threads)  # noqa: SIM112
    try:
        from dramatiq.cli import main as dramatiq_main
        from dramatiq.cli import make_argument_parser
        from podspool.daemon.executors.remote.broker import answers, missing_commands
    except ImportError as exc:
        raise fail(exitcodes.USAGE, f"{exc.name} is missing: pip install 'podspool[dramatiq]'") from None
    from podspool.daemon.credentials import redact_urls
    from podspool.daemon.executors.remote.actors import sweep_temp_folders
    from podspool.daemon.executors.remote.names import PARENT_ENV, STAGES_ENV, Names
    from podspool.daemon.executors.remote.wire import KeyMissing, load_key

    try:
        load_key()
    except KeyMissing as exc:
        raise fail(exitcodes.USAGE, str(exc)) from None
    problem = answers(cfg.executor)
    if problem:
        raise fail(exitcodes.FAILURE, f"the broker {redact_urls(cfg.executor.broker_url)} does not answer: {problem}")
    missing = missing_commands(cfg.executor)
    if missing:  # it would take messages and then stall on the first command refused
        raise fail(exitcodes.FAILURE, f"the broker {redact_urls(cfg.executor.broker_url)} does not let this user "
                                      f"run {', '.join(missing)}: grant them in its ACL (podspool doctor checks)")
    swept = sweep_temp_folders()  # task folders of worker processes killed before they could clean up
    if swept:
        typer.echo(f"podspool worker: removed {swept} task folder(s) left by workers that died", err=True)
    os.environ[PARENT_ENV] = str(os.getpid())  # its worker processes exit when this one dies (even by -9)
    # the worker processes dramatiq starts read these while importing their broker module
    os.environ["PODSPOOL_CONFIG"] = str(Path(path).absolute()) if path else ""
    os.environ[STAGES_ENV] = ",".join(stages)
    names = Names(cfg.executor.namespace)
    argv = ["podspool.daemon.executors.remote.worker_entry:broker", "--processes", str(processes),
            "--threads", str(threads or cfg.executor.threads), "--skip-logging",
            "--worker-shutdown-timeout", str(max(100, int(cfg.executor.shutdown_grace_s * 1000))),
            "--queues", *[names.queue(s) for s in stages]]  # type: ignore[arg-type]
    raise typer.Exit(dramatiq_main(make_argument_parser().parse_args(argv)) or exitcodes.OK)
