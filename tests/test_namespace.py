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


def _module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    name = ".".join(("podspool", *parts))
    return name.removesuffix(".__init__")


def _runtime_imports(path: Path, known: set[str]) -> set[str]:
    """The podspool modules `path` imports when it runs: function-level imports count, imports under
    `if TYPE_CHECKING:` do not (type hints only)."""
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("podspool."):
                out.update(f"{child.module}.{a.name}" for a in child.names if f"{child.module}.{a.name}" in known)
                if child.module in known:
                    out.add(child.module)
            elif isinstance(child, ast.Import):
                out.update(a.name for a in child.names if a.name in known)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return out


def test_no_module_imports_itself_back() -> None:
    """No import cycle between podspool's modules (a package's __init__ re-exporting its own parts aside):
    each concern's module may be read, and changed, without the ones that use it."""
    paths = {_module_of(p): p for d in ("daemon", "stages") for p in (ROOT / d).rglob("*.py")}
    known = set(paths)
    graph = {m: _runtime_imports(p, known) for m, p in paths.items()}
    packages = {m for m, p in paths.items() if p.name == "__init__.py"}
    cycles = []
    for start in graph:
        stack, seen = [(start, (start,))], {start}
        while stack:
            node, path = stack.pop()
            for nxt in graph[node] - packages:
                if nxt == start and start not in packages:
                    cycles.append(" -> ".join((*path, start)))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, (*path, nxt)))
    assert cycles == []


def test_the_supervisor_starts_without_the_http_stack() -> None:
    """The supervisor checks speech settings at intake from settings and installed files only: importing
    it must not load requests (60-90 ms of every start-up, on the path to the first episode)."""
    import subprocess
    import sys

    code = ("import sys, podspool.daemon.core.supervisor, podspool.daemon.cli.main; "
            "print(sorted(m for m in ('requests', 'urllib3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
