"""Bounds on what one manifest can cost intake: the problems it names, the sources it cites.

An 8 MB manifest can hold 700,000 mistakes: naming each one held the daemon's main loop for 36 s
(past systemd's WatchdogSec) and wrote a 50 MB error file and a 53 MB log line. The first
MAX_PROBLEMS are named, the rest counted; sources past MAX_SOURCES are refused unread.
"""

from __future__ import annotations

from pydantic import ValidationError

MAX_PROBLEMS = 100  # named in rejected/<name>.error.txt and the log line; the rest are counted
MAX_SOURCES = 2000  # local files and URLs cited by one manifest, all episodes together
MAX_PROBLEM_CHARS = 500  # one problem's text (a field name or a value can be long)


def capped(problems: list[str], limit: int = MAX_PROBLEMS) -> list[str]:
    """The first `limit` problems (each at most MAX_PROBLEM_CHARS), and a last line counting the rest."""
    out = [p if len(p) <= MAX_PROBLEM_CHARS else p[:MAX_PROBLEM_CHARS] + "…" for p in problems[:limit]]
    if len(problems) > limit:
        out.append(f"… and {len(problems) - limit} more problems (only the first {limit} are named)")
    return out


def described(exc: ValidationError, limit: int = MAX_PROBLEMS, batch_level: bool = False) -> list[str]:
    """`describe_errors` for at most `limit` errors, plus one line counting the rest: the errors are listed
    without their input values (a copy of each value made listing 700,000 errors take seconds more)."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    out: list[str] = []
    for e in errors:
        if not e["loc"] and not batch_level:
            continue
        if len(out) == limit:
            out.append(f"… and {len(errors) - limit} more field problems")
            break
        where = ".".join(str(p) for p in e["loc"]) or "manifest"
        msg = "unknown field" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        out.append(f"{where}: {msg}")
    return out


def sources_problem(count: int) -> str | None:
    if count <= MAX_SOURCES:
        return None
    return f"the manifest cites {count} sources: at most {MAX_SOURCES} per manifest (none of them was read)"
