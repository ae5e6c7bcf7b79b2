"""Names and (de)serialisation of the artifacts a stage leaves in an episode folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from podspool.stages import fsio
from podspool.stages.base import Finding, ResearchOutput, Usage

RESEARCH_JSON = "research.json"
SCRIPT_MD = "script.md"
QUALITY_JSON = "quality.json"
AUDIO_WAV = "audio.wav"
AUDIO_MP3 = "audio.mp3"
AUDIO_JSON = "audio.json"
# publishable episode (issue 12); audio.mp3 is a hard link to episode.mp3, kept for the contract's table
EPISODE_MP3 = "episode.mp3"
MP3_NAMES = (EPISODE_MP3, AUDIO_MP3)  # either means the episode has its mp3
CHAPTERS_JSON = "chapters.json"
TRANSCRIPT_VTT = "transcript.vtt"
SHOWNOTES_MD = "shownotes.md"


def save_research(folder: Path, out: ResearchOutput, cost_usd: float, extra: dict[str, Any] | None = None) -> None:
    doc = {
        "provider": out.provider,
        "grounded": out.grounded,
        "findings": [dict(vars(f)) for f in out.findings],  # flat: asdict deep-copies each one
        "citations": out.citations,
        "searched": out.searched,
        "answer": out.answer,
        "sources": out.sources,
        "usage": [u.to_dict() for u in out.usage],
        "cost_usd": cost_usd,
        **(extra or {}),
    }
    fsio.write_json(folder / RESEARCH_JSON, doc)


def load_research(folder: Path) -> tuple[ResearchOutput, dict[str, Any]]:
    doc = fsio.read_json(folder / RESEARCH_JSON)
    out = ResearchOutput(
        provider=doc.get("provider", "?"),
        findings=[Finding(**f) for f in doc.get("findings", [])],
        citations=list(doc.get("citations", [])),
        searched=list(doc.get("searched", [])),
        usage=[Usage.from_dict(u) for u in doc.get("usage", [])],
        grounded=bool(doc.get("grounded", False)),
        answer=doc.get("answer"),
        sources=list(doc.get("sources", [])),
    )
    return out, doc
