"""What every `podspool` command shares: the --spool and --config options, failing with a message, loading
the configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from podspool.daemon.cli import exitcodes
from podspool.daemon.config import Config, ConfigError, config_path, load_config

SpoolOpt = Annotated[str | None, typer.Option("--spool", help="spool root (default $PODSPOOL_SPOOL or ./spool)")]
ConfigOpt = Annotated[str | None, typer.Option("--config", help="TOML config (default $PODSPOOL_CONFIG, "
                                                                "else <spool>/podspool.toml)")]


def fail(code: int, message: str) -> typer.Exit:
    typer.echo(f"podspool: {message}", err=True)
    return typer.Exit(code)


def config_or_exit(spool: Path, config: str | None) -> Config:
    try:
        return load_config(config_path(config, spool))
    except ConfigError as exc:
        raise fail(exitcodes.USAGE, f"configuration: {exc}") from None
