"""Shows that cannot be made are refused up front: `validate`, `submit`, `plan` and `doctor` name every
problem (a format needing more speakers than the cast, a language the writer cannot write or no registry
knows, duplicate names, a voice that does not exist), exit 2, and nothing is queued or spent."""

from __future__ import annotations

from pathlib import Path

import pytest
from podspool_helpers import cli, write_manifest

LOCAL = """
[research]
provider = "local"
[production]
provider = "local"
[audio]
provider = "espeak"
"""
MODEL = LOCAL.replace('provider = "local"\n[audio]', 'provider = "openai"\n[audio]')


def setup(tmp: Path, config: str = LOCAL) -> tuple[Path, Path]:
    (tmp / "notes.md").write_text("# Bees\n\nBees dance to point at food.\n")
    (tmp / "podspool.toml").write_text(config)
    return tmp / "podspool.toml", tmp / "spool"


def episode(number: int, **show: object) -> dict[str, object]:
    return {"number": number, "topic": "Bees", "sources": ["notes.md"], **show}


BAD = {
    "batch_id": "shows",
    "episodes": [
        episode(1, format="debate", cast=[{"name": "Ana"}]),
        episode(2, language="de"),
        episode(3, language="xx"),
        episode(4, cast=[{"name": "Ana"}, {"name": "ana"}]),
        episode(5, format="solo", cast=[{"name": "Ana"}, {"name": "Bo"}]),
        episode(6, format="interview", cast=[{"name": "Ana", "voices": {"espeak": "nosuchvoice"}}, {"name": "Bo"}]),
        episode(7, format="debate", cast=[{"name": "Ana"}, {"name": "Bo", "role": "moderator"}]),
    ],
}
EXPECTED = [
    "episodes.3.cast: cast names must differ: Ana, ana",
    "episode 1: format debate needs at least 2 speakers; the cast has 1",
    'episode 2: the local writer ([production] provider = "local") writes English only, not German (de): set '
    '[production] provider = "openai" with a model that writes German',
    "episode 3: language 'xx' is not a language the IANA registry knows",
    "episode 5: format solo has at most 1 speaker(s); the cast has 2",
    "episode 6: espeak-ng has no voice 'nosuchvoice' (the voice of Ana)",
    "episode 7: a debate needs a speaker on each side besides its moderator: Bo moderates, and the cast has 2",
]


@pytest.mark.parametrize("command", ["validate", "submit", "plan"])
def test_every_invalid_combination_is_named_and_refused(tmp_path: Path, command: str) -> None:
    config, spool = setup(tmp_path)
    manifest = write_manifest(tmp_path / "bad.json", BAD)
    args = [command, str(manifest), "--config", str(config)] + (["--spool", str(spool)] if command != "validate" else [])
    out = cli(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    for problem in EXPECTED:
        assert problem in out.stderr, (problem, out.stderr)
    assert not (spool / "inbox").exists() or not any((spool / "inbox").iterdir())  # nothing queued


def test_the_offline_writer_refuses_a_language_at_submit_with_the_reason(tmp_path: Path) -> None:
    config, spool = setup(tmp_path)
    manifest = write_manifest(tmp_path / "de.json", {"language": "de", "format": "interview",
                                                     "episodes": [episode(1), episode(2)]})
    out = cli("submit", str(manifest), "--config", str(config), "--spool", str(spool), cwd=tmp_path)
    assert out.returncode == 2
    assert ('every episode: the local writer ([production] provider = "local") writes English only, not German '
            '(de)') in out.stderr
    assert "episode 1:" not in out.stderr  # one problem of the whole batch, said once
    # a model writes German: the same batch is accepted, and espeak has a German voice
    (tmp_path / "podspool.toml").write_text(MODEL)
    ok = cli("submit", str(manifest), "--config", str(config), "--spool", str(spool), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert len(list((spool / "inbox").glob("*.json"))) == 1


def test_every_format_and_cast_size_it_allows_is_accepted(tmp_path: Path) -> None:
    config, _ = setup(tmp_path)
    names = [{"name": n} for n in ("Ana", "Bo", "Chidi", "Dana")]
    eps = [episode(i, format=fmt, cast=names[:n]) for i, (fmt, n) in enumerate(
        [("conversation", 2), ("conversation", 4), ("interview", 3), ("debate", 3), ("debate", 4), ("solo", 1),
         ("brief", 1), ("brief", 4)], 1)]
    out = cli("validate", str(write_manifest(tmp_path / "ok.json", {"episodes": eps})), "--config", str(config),
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr


def test_doctor_names_a_default_show_that_cannot_be_made(tmp_path: Path) -> None:
    config, spool = setup(tmp_path, LOCAL.replace('provider = "local"\n[audio]',
                                                  'provider = "local"\nlanguage = "hi"\nformat = "debate"\n'
                                                  'cast = [{name = "Ana"}]\n[audio]'))
    out = cli("doctor", "--config", str(config), "--spool", str(spool), cwd=tmp_path)
    assert out.returncode != 0
    line = next(x for x in out.stdout.splitlines() if "default show" in x)
    assert line.startswith("FAIL") and "format debate needs at least 2 speakers" in line
    assert "writes English only, not Hindi (hi)" in line
