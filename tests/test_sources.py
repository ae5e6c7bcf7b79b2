"""Source resolution: confined to the roots, regular text files only, URLs passed through."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from podspool.stages.sources.resolve import (
    SourceError,
    check_sources,
    is_url,
    resolve_source,
    roots_from_settings,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.md").write_text("# A\n\nSome text.\n")
    (tmp_path / "notes" / "b.html").write_text("<p>x</p>")
    return tmp_path


def test_is_url() -> None:
    assert is_url("https://example.org/page")
    assert is_url("http://example.org")
    assert not is_url("ftp://example.org/file.md")
    assert not is_url("notes/a.md")
    assert not is_url("https://")


def test_relative_path_resolves_against_first_root(root: Path) -> None:
    assert resolve_source("notes/a.md", [root]) == (root / "notes" / "a.md").resolve()
    assert resolve_source("notes/b.html", [root]).suffix == ".html"


def test_absolute_path_inside_a_second_root(root: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = tmp_path_factory.mktemp("other")
    (other / "c.txt").write_text("text")
    assert resolve_source(str(other / "c.txt"), [root, other]) == (other / "c.txt").resolve()


@pytest.mark.parametrize("spec, words", [
    ("../outside.md", "outside the allowed source roots"),
    ("/etc/passwd", "outside the allowed source roots"),
    ("notes/missing.md", "no such file"),
    ("notes", "only .md"),
    ("notes/a.md.exe", "only .md"),
])
def test_bad_specs_are_refused(root: Path, spec: str, words: str) -> None:
    (root.parent / "outside.md").write_text("secret")
    with pytest.raises(SourceError, match=words):
        resolve_source(spec, [root])


def test_symlink_out_of_the_root_is_refused(root: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    secret = tmp_path_factory.mktemp("secret") / "s.md"
    secret.write_text("secret")
    os.symlink(secret, root / "notes" / "link.md")
    with pytest.raises(SourceError, match="outside"):
        resolve_source("notes/link.md", [root])


def test_directory_with_a_text_suffix_is_not_a_regular_file(root: Path) -> None:
    (root / "dir.md").mkdir()
    with pytest.raises(SourceError, match="not a regular file"):
        resolve_source("dir.md", [root])


def test_check_sources_reports_one_problem_per_bad_spec(root: Path) -> None:
    problems = check_sources(["notes/a.md", "https://example.org/x", "../x.md", "nope.txt"], [root])
    assert len(problems) == 2
    assert "../x.md" in problems[0] and "nope.txt" in problems[1]
    assert check_sources(["notes/a.md", "https://example.org"], [root]) == []


def test_roots_from_settings_default_to_cwd(tmp_path: Path) -> None:
    assert roots_from_settings([], cwd=tmp_path) == [tmp_path.resolve()]
    assert roots_from_settings(["sub", "/abs"], cwd=tmp_path) == [(tmp_path / "sub").resolve(), Path("/abs")]
