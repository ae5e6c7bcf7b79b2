"""A manifest that names documents (PDF, DOCX, EPUB) is checked in a child process, under a time bound.

Checking a document means parsing it (to its first passage; all of it where a target length is judged
from offline sources), and a parser can take seconds on a small hostile file: a 3 KB PDF of 100,000
text operators takes pypdf 2 s. A manifest citing many would hold the main loop past systemd's watchdog
(WatchdogSec=30), which restarts the daemon, which takes the same manifest again. In a child, the slow
or crashing parse costs that manifest a rejection, not the loop its watchdog or the supervisor its life.
Any other manifest is checked in the supervisor, as it costs no parse.
"""

from __future__ import annotations

import multiprocessing as mp
import re
import signal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from podspool.daemon.intake.validate import ManifestProblem, check_manifest
from podspool.daemon.models import BatchManifest

CHECK_S = 20.0  # well inside WatchdogSec=30: the loop pings the watchdog again once the check returns
_DOCUMENT = re.compile(rb"\.(?:pdf|docx|epub)\b", re.IGNORECASE)


def names_documents(raw: bytes) -> bool:
    """Whether the manifest may cite a document (a false yes only costs a child process)."""
    return _DOCUMENT.search(raw) is not None


def check_apart(raw: bytes, roots: list[Path], timeout_s: float = CHECK_S, **checks: Any) -> BatchManifest:
    """`check_manifest(raw, roots, **checks)` in a child process; a check that outlasts `timeout_s`, or
    whose process dies, refuses the manifest (ManifestProblem) with the reason."""
    ctx = mp.get_context("forkserver")  # the workers' fork server: the stages' modules are loaded there
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_check, args=(send, raw, roots, checks), name="podspool-intake-check", daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(timeout_s):
            raise ManifestProblem([f"its documents took more than {timeout_s:.0f} s to check, so it was refused "
                                   "unread (a document that parses this slowly would hold the daemon); "
                                   "`podspool validate` names each problem without a time limit"])
        try:
            kind, value = receive.recv()
        except EOFError:
            child.join(5)
            raise ManifestProblem([f"its documents could not be checked: the checking process "
                                   f"{_ended(child.exitcode)} (a damaged or hostile document?)"]) from None
    finally:
        receive.close()
        if child.is_alive():
            child.kill()
        child.join()
    if kind == "problems":
        raise ManifestProblem(value)
    return value


def _check(send: Connection, raw: bytes, roots: list[Path], checks: dict[str, Any]) -> None:
    try:
        result: tuple[str, object] = ("manifest", check_manifest(raw, roots, **checks))
    except ManifestProblem as exc:
        result = ("problems", exc.problems)
    send.send(result)


def _ended(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"
