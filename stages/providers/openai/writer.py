"""Script writing through any OpenAI-compatible server (`POST {base_url}/chat/completions`).

OpenAI, Ollama, vLLM, llama.cpp server: the key is optional, because local servers need none. Where
they differ, this writer copes: the token cap is `max_tokens` or `max_completion_tokens` (switched once
on a 400 that names the one sent, or fixed by `token_param`), `usage` may be missing (estimated from
characters, so a paid server is never counted free), a reply cut at the cap (`finish_reason: "length"`)
is reported as incomplete rather than judged as if whole, and reasoning arrives as `<think>` in the
content or in a `reasoning_content`/`reasoning` field (never part of the script). The prompt is
prompts/script.md.tmpl with the rules from script_format; a revision sends the previous reply back
as the assistant's turn, so the feedback can point at its lines.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from string import Template
from typing import Any

import requests
from loguru import logger
from podspool.stages.base import EpisodeInput, ResearchOutput, StageContext, StageError, Usage, WriterOutput
from podspool.stages.providers.http import HttpClient, MalformedResponse, parse_json
from podspool.stages.script import language
from podspool.stages.script.format import cast_lines, script_rules, show_for
from podspool.stages.settings import OpenAISettings

API = "openai"
SYSTEM_PROMPT = "You are a careful podcast scriptwriter. You follow the output format exactly."
TOKEN_PARAMS = ("max_tokens", "max_completion_tokens")
REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking")
CHARS_PER_TOKEN = 4  # for servers that report no usage: a common rule of thumb for English
Reply = tuple[str, str | None, Usage]  # the text, why it is incomplete (if it is), usage


def _template(name: str) -> Template:
    return Template(resources.files("podspool.stages.providers").joinpath("prompts", name).read_text(encoding="utf-8"))


def research_block(research: ResearchOutput) -> str:
    lines = []
    for i, f in enumerate(research.findings, 1):
        title = f" ({f.title})" if f.title else ""
        lines.append(f"[{i}] {' '.join(f.text.split())}\n    source: {f.source}{title}")
    return "\n".join(lines) or "(no findings)"


# what each format asks of the model, in a sentence; the rules then give its headings and parts
FORMAT_LINES = {
    "conversation": "a conversation: the hosts talk the findings through with each other.",
    "interview": "an interview: the host asks, the guest expert answers from the findings.",
    "debate": "a debate: two sides argue the question, each from the findings it cites.",
    "solo": "a solo episode: one narrator tells the findings, alone.",
    "brief": "a news brief: short, factual stories, one per main finding, read in turn.",
}


def build_prompt(episode: EpisodeInput, research: ResearchOutput, hosts: list[str], feedback: list[str],
                 min_words: int, max_words: int) -> str:
    """The first message; with `feedback` and no earlier reply at hand, the revision request is appended."""
    show = show_for(episode.show, hosts)
    lang = language.name(show.language)
    prompt = _template("script.md.tmpl").safe_substitute(
        topic=episode.topic,
        title_line=f'\nTitle: "{episode.title}".' if episode.title else "",
        notes_line=f"\nFocus: {episode.notes}" if episode.notes else "",
        format_line=FORMAT_LINES[show.format], count=len(show.cast), cast=cast_lines(show),
        language_line=f"{lang} ({show.language}): write the whole script in {lang}.",
        rules=script_rules(show, min_words, max_words, research.findings),
        research=research_block(research),
    )
    if feedback:
        prompt += "\n\n" + revision_prompt(feedback)
    return prompt


def revision_prompt(feedback: list[str]) -> str:
    return _template("revision.md.tmpl").safe_substitute(feedback="\n".join(f"- {r}" for r in feedback))


class OpenAIWriter:
    name = "openai"
    dry_run = False

    def __init__(self) -> None:
        self.http = HttpClient(API)
        self._token_param: dict[tuple[str, str | None], str] = {}  # learnt from a 400, per server and model
        self._last_reply: dict[str, str] = {}  # episode_id -> its last reply, for the revision's context

    def write(self, episode: EpisodeInput, research: ResearchOutput, hosts: list[str],
              feedback: list[str], ctx: StageContext) -> WriterOutput:
        settings = ctx.settings.providers.openai
        production = ctx.settings.production
        key = ctx.secrets.get(API) or None
        previous = self._last_reply.get(episode.episode_id) if feedback else None
        first = build_prompt(episode, research, hosts, [] if previous else feedback,
                             production.min_words, production.max_words)
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": first}]
        if previous is not None:
            messages += [{"role": "assistant", "content": previous},
                         {"role": "user", "content": revision_prompt(feedback)}]
        body: dict[str, Any] = {"model": settings.model, "messages": messages,
                                "temperature": settings.temperature}
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        prompt_chars = sum(len(m["content"]) for m in messages)

        def parse(response: requests.Response) -> Reply:
            doc = parse_json(response)
            text, incomplete = _content(doc, settings)
            return text, incomplete, _usage(doc, settings.model, prompt_chars, len(text))

        text, incomplete, usage = self._call(ctx, settings, body, parse, headers, key)
        self._last_reply = {episode.episode_id: text}  # one episode at a time per process: keep just it
        # the reply as the model wrote it: the production stage normalises every writer's script, and
        # keeps this text for the operator when a draft is refused
        return WriterOutput(script=text, usage=[usage], incomplete=incomplete)

    def _call(self, ctx: StageContext, settings: OpenAISettings, body: dict[str, Any],
              parse: Callable[[requests.Response], Reply], headers: dict[str, str], key: str | None) -> Reply:
        """One chat completion; a 400 that names the token parameter sent is retried once with the other."""
        server = (settings.base_url, settings.model)
        param = settings.token_param if settings.token_param != "auto" else self._token_param.get(server, "max_tokens")
        for _ in range(2):
            sent = {**body, param: settings.max_tokens}
            try:
                return self.http.call(ctx, settings, "/chat/completions", body=sent, parse=parse,
                                      headers=headers, key=key)
            except StageError as exc:
                other = TOKEN_PARAMS[1 - TOKEN_PARAMS.index(param)]
                if settings.token_param != "auto" or not _names_param(str(exc), param) or server in self._token_param:
                    raise
                logger.warning("openai: the server refused {!r}; sending {!r} instead (set "
                               "providers.openai.token_param to skip this)", param, other)
                param = self._token_param[server] = other
        raise AssertionError("unreachable")


def _names_param(message: str, param: str) -> bool:
    """A 400 about the parameter's name (unsupported, unknown), not about its value (too large)."""
    text = message.lower()
    return "http 400" in text and param in text and not any(
        w in text for w in ("context length", "too large", "maximum context", "must be less"))


def _content(doc: dict[str, Any], settings: OpenAISettings) -> tuple[str, str | None]:
    """The reply's text, and why it is incomplete when the server says it was cut."""
    try:
        choice = doc["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise MalformedResponse("no choices[0].message in the answer") from None
    if not isinstance(message, dict):
        raise MalformedResponse("choices[0].message is not an object")
    text = message.get("content") or message.get("refusal") or ""  # OpenAI puts a refusal beside a null content
    if isinstance(text, list):  # content parts, as some proxies send: [{"type": "text", "text": "…"}]
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict) and isinstance(p.get("text"), str))
    if not isinstance(text, str):
        raise MalformedResponse("choices[0].message.content is not text")
    reasoning = next((message[f] for f in REASONING_FIELDS if isinstance(message.get(f), str) and message[f]), "")
    finish = choice.get("finish_reason")
    incomplete = None
    if finish == "length":
        where = "while still reasoning, before any script" if reasoning and not text.strip() else ""
        incomplete = (f"the reply was cut at the token limit ({settings.max_tokens} tokens, finish_reason "
                      f"'length'){' ' + where if where else ''}")
        logger.warning("openai: {}", incomplete)
    elif reasoning and not text.strip():
        incomplete = "the model returned only its reasoning and no script"
    return text, incomplete


def _usage(doc: dict[str, Any], model: str | None, prompt_chars: int, reply_chars: int) -> Usage:
    name = str(doc.get("model") or model)
    u = doc.get("usage")
    if isinstance(u, dict) and (u.get("prompt_tokens") or u.get("completion_tokens")):
        return Usage(api=API, model=name, input_tokens=int(u.get("prompt_tokens") or 0),
                     output_tokens=int(u.get("completion_tokens") or 0))
    # llama.cpp and some proxies send no usage: estimate, so a priced model is not counted free
    return Usage(api=API, model=name, input_tokens=prompt_chars // CHARS_PER_TOKEN,
                 output_tokens=reply_chars // CHARS_PER_TOKEN)
