"""Script writing through any OpenAI-compatible server (`POST {base_url}/chat/completions`).

OpenAI, Ollama, vLLM, llama.cpp: the key is optional, because local servers need none. The prompt
lives in prompts/script.md.tmpl (and revision.md.tmpl, which carries the failed gates' reasons).
"""

from __future__ import annotations

import re
from importlib import resources
from string import Template
from typing import Any

import requests
from loguru import logger
from podspool.stages.base import EpisodeInput, ResearchOutput, StageContext, Usage, WriterOutput
from podspool.stages.providers.http import HttpClient, MalformedResponse, parse_json

API = "openai"
SYSTEM_PROMPT = "You are a careful podcast scriptwriter. You follow the output format exactly."
THINK = re.compile(r"<think>.*?</think>", re.DOTALL)  # reasoning models served locally
FENCE = re.compile(r"^\s*```[\w-]*\s*$")
DIRECTION = re.compile(r"^\s*[\[(].*[\])]\s*$")  # "[Intro music]", "(laughs)"


def _template(name: str) -> Template:
    return Template(resources.files("podspool.stages.providers").joinpath("prompts", name).read_text(encoding="utf-8"))


def research_block(research: ResearchOutput) -> str:
    lines = []
    for i, f in enumerate(research.findings, 1):
        title = f" ({f.title})" if f.title else ""
        lines.append(f"[{i}] {f.text}\n    source: {f.source}{title}")
    return "\n".join(lines) or "(no findings: keep to general, well-known facts and say so)"


def build_prompt(episode: EpisodeInput, research: ResearchOutput, hosts: list[str], feedback: list[str],
                 min_words: int, max_words: int) -> str:
    prompt = _template("script.md.tmpl").safe_substitute(
        topic=episode.topic,
        title_line=f'\nTitle: "{episode.title}".' if episode.title else "",
        notes_line=f"\nFocus: {episode.notes}" if episode.notes else "",
        host_a=hosts[0], host_b=hosts[1], min_words=min_words, max_words=max_words,
        research=research_block(research),
    )
    if feedback:
        prompt += _template("revision.md.tmpl").safe_substitute(feedback="\n".join(f"- {r}" for r in feedback))
    return prompt


def normalise_script(text: str, hosts: list[str]) -> str:
    """Bring the usual model variations ("Alex: …", "**Alex**: …", "ALEX (smiling): …") to `**Alex:** …`."""
    names = "|".join(re.escape(h) for h in hosts)
    turn = re.compile(rf"^\s*(?:[-*]\s+)?\**\s*({names})\s*\**\s*(?:\([^)]*\))?\s*\**\s*:\s*\**\s*(.+)$",
                      re.IGNORECASE)
    canonical = {h.lower(): h for h in hosts}
    out: list[str] = []
    for line in THINK.sub("", text).splitlines():
        if FENCE.match(line) or DIRECTION.match(line):
            continue
        m = turn.match(line)
        if m:
            out.append(f"**{canonical[m.group(1).lower()]}:** {m.group(2).strip().strip('*').strip()}")
        else:
            out.append(line.rstrip())
    return "\n".join(out).strip() + "\n"


class OpenAIWriter:
    name = "openai"

    def __init__(self) -> None:
        self.http = HttpClient(API)

    def write(self, episode: EpisodeInput, research: ResearchOutput, hosts: list[str],
              feedback: list[str], ctx: StageContext) -> WriterOutput:
        settings = ctx.settings.providers.openai
        production = ctx.settings.production
        key = ctx.secrets.get(API) or None
        body = {
            "model": settings.model,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                         {"role": "user", "content": build_prompt(episode, research, hosts, feedback,
                                                                  production.min_words, production.max_words)}],
            "temperature": settings.temperature,
            "max_tokens": settings.max_tokens,
        }
        headers = {"Authorization": f"Bearer {key}"} if key else {}

        def parse(response: requests.Response) -> tuple[str, Usage]:
            doc = parse_json(response)
            return _content(doc), _usage(doc, settings.model)

        text, usage = self.http.call(ctx, settings, "/chat/completions", body=body, parse=parse,
                                     headers=headers, key=key)
        return WriterOutput(script=normalise_script(text, hosts), usage=[usage])


def _content(doc: dict[str, Any]) -> str:
    try:
        choice = doc["choices"][0]
        text = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise MalformedResponse("no choices[0].message.content in the answer") from None
    if not isinstance(text, str) or not text.strip():
        raise MalformedResponse("the model returned an empty script")
    if choice.get("finish_reason") == "length":
        logger.warning("openai: the script was cut at max_tokens; the quality gates will judge it")
    return text


def _usage(doc: dict[str, Any], model: str | None) -> Usage:
    u = doc.get("usage") if isinstance(doc.get("usage"), dict) else None
    get = (lambda k: int(u.get(k) or 0)) if u else (lambda k: 0)
    return Usage(api=API, model=str(doc.get("model") or model), input_tokens=get("prompt_tokens"),
                 output_tokens=get("completion_tokens"))
