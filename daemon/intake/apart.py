"""A manifest that names documents (PDF, DOCX, EPUB) is checked in a child process, under a time bound.

Checking a document means parsing it (to its first passage; all of it where a target length is judged
from offline sources), and a parser can take seconds on a small hostile file: a 3 KB PDF of 100,000
text operators takes pypdf 2 s. A manifest citing many would hold the main loop past systemd's watchdog
(WatchdogSec=30), which restarts the daemon, which takes the same manifest again. In a child, the slow
or crashing parse costs that manifest a rejection, not the loop its watchdog or the supervisor its life.
A manifest citing text files only is checked in the supervisor: reading those costs no parse.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from podspool.daemon.intake.validate import ManifestProblem, check_manifest, parse_json
from podspool.daemon.models import BatchManifest
from podspool.stages.sources.limits import TEXT_SUFFIXES, is_url

CHECK_S = 20.0  # well inside WatchdogSec=30: the loop pings the watchdog again once the check returns


def names_documents(raw: bytes) -> bool:
    """Whether an episode of the manifest cites a file that is not plain text (a PDF, DOCX, EPUB, or a
    name no reader knows), read from the parsed JSON: a name in the raw bytes may be escaped
    ("slow\\u002epdf"). A manifest that is not JSON is refused unread, so it names none."""
    try:
        data = parse_json(raw)
    except ManifestProblem:
        return False
    episodes = data.get("episodes") if isinstance(data, dict) else None
    for episode in episodes if isinstance(episodes, list) else []:
        sources = episode.get("sources") if isinstance(episode, dict) else None
        for spec in sources if isinstance(sources, list) else []:
            if isinstance(spec, str) and not is_url(spec) and not spec.lower().endswith(TEXT_SUFFIXES):
                return True
    return False


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
                                   "(a document that parses this slowly would hold the daemon); `podspool "
                                   "validate` checks them without a time limit and names each problem"])
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
