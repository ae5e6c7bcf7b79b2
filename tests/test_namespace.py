"""podspool installs as podspool.daemon / podspool.stages: nothing may import the bare `daemon` or `stages`,
which belong to other distributions (python-daemon owns `daemon`)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BARE = {"daemon", "stages"}


def _bare_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in BARE]
    return found


def test_nothing_imports_a_bare_daemon_or_stages() -> None:
    files = [p for d in ("daemon", "stages", "tests", "benchmarks") for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 50
    offenders = [line for p in files for line in _bare_imports(p)]
    assert offenders == []


def test_installed_names_resolve_to_the_top_level_folders() -> None:
    import podspool.daemon
    import podspool.stages

    assert Path(podspool.daemon.__file__).parent == ROOT / "daemon"
    assert Path(podspool.stages.__file__).parent == ROOT / "stages"
