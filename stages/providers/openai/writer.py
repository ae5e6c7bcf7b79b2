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

import json
from collections.abc import Callable, Collection
from importlib import resources
from string import Template
from typing import Any

import requests
from loguru import logger
from podspool.stages.base import EpisodeInput, ResearchOutput, StageContext, StageError, Usage, WriterOutput
from podspool.stages.providers.http import HttpClient, MalformedResponse, parse_json
from podspool.stages.script import language
from podspool.stages.script.format import cast_lines, language_rule, script_rules, show_for, speaker_rule
from podspool.stages.script.normalise import strip_reasoning
from podspool.stages.script.segments import Outline, SegmentRequest, outline_from_reply
from podspool.stages.settings import OpenAISettings

API = "openai"
SYSTEM_PROMPT = "You are a careful podcast scriptwriter. You follow the output format exactly."
TOKEN_PARAMS = ("max_tokens", "max_completion_tokens")
REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking")
CHARS_PER_TOKEN = 4  # for servers that report no usage: a common rule of thumb for English
Reply = tuple[str, str | None, Usage]  # the text, why it is incomplete (if it is), usage


def _template(name: str) -> Template:
    return Template(resources.files("podspool.stages.providers").joinpath("prompts", name).read_text(encoding="utf-8"))


def research_block(research: ResearchOutput, only: Collection[int] | None = None, words: int | None = None) -> str:
    """The numbered findings (those in `only`, when given), each cut to its first `words` words when given."""
    lines = []
    for i, f in enumerate(research.findings, 1):
        if only is not None and i not in only:
            continue
        title = f" ({f.title})" if f.title else ""
        text = f.text.split()
        said = " ".join(text[:words]) + (" ..." if words is not None and len(text) > words else "")
        lines.append(f"[{i}] {said}\n    source: {f.source}{title}")
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
        self._form: dict[tuple[str, str | None], str] = {}  # the structured form a server takes, once known
        self._trying: dict[tuple[str, str | None], int] = {}  # else the index of the form to try next

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

    def outline(self, episode: EpisodeInput, research: ResearchOutput, hosts: list[str], planned: Outline,
                ctx: StageContext) -> tuple[Outline, list[Usage]]:
        """One call: the model's plan of the segments, checked against podspool's (segments.outline_from_reply)."""
        prompt = outline_prompt(episode, research, hosts, planned, ctx.settings.audio.words_per_minute)
        text, doc, _, usage = self._ask(ctx, [{"role": "user", "content": prompt}], OUTLINE_SCHEMA, "outline")
        outline = outline_from_reply(doc, planned, len(research.findings))
        for note in outline.notes:
            logger.info("openai outline {}: {}", episode.episode_id, note)
        return outline, [usage]

    def write_segment(self, episode: EpisodeInput, research: ResearchOutput, hosts: list[str],
                      request: SegmentRequest, ctx: StageContext) -> WriterOutput:
        """One segment (with the intro when first, the outro when last), as turns where the server can
        constrain its reply to them; a revision sends its last draft back with the reasons it failed."""
        server = (ctx.settings.providers.openai.base_url, ctx.settings.providers.openai.model)
        structured = self._form.get(server) != TEXT
        messages = [{"role": "user", "content": segment_prompt(episode, research, hosts, request, structured)}]
        if request.feedback:
            if request.previous:
                messages.append({"role": "assistant", "content": request.previous})
            messages.append({"role": "user", "content": revision_prompt(request.feedback).replace(
                "the whole script again from its first line", f"segment {request.segment.number} again")})
        schema = turns_schema(hosts, request.first, request.last)
        text, doc, incomplete, usage = self._ask(ctx, messages, schema, "segment")
        script = turns_markdown(doc, request) if doc is not None else None
        return WriterOutput(script=script if script is not None else text, usage=[usage], incomplete=incomplete)

    def _ask(self, ctx: StageContext, messages: list[dict[str, str]], schema: dict[str, Any],
             name: str) -> tuple[str, Any, str | None, Usage]:
        """One chat completion asking for `schema` in the form this server takes (found out once, then
        remembered); the reply's text, its JSON object when it is one, why it is incomplete, usage."""
        settings = ctx.settings.providers.openai
        key = ctx.secrets.get(API) or None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        server = (settings.base_url, settings.model)
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, *messages]
        prompt_chars = sum(len(m["content"]) for m in messages)

        def parse(response: requests.Response) -> Reply:
            doc = parse_json(response)
            text, incomplete = _content(doc, settings)
            return text, incomplete, _usage(doc, settings.model, prompt_chars, len(text))

        while True:
            known = self._form.get(server)
            trying = self._trying.get(server, 0)
            form = known or (STRUCTURED_FORMS[trying] if trying < len(STRUCTURED_FORMS) else TEXT)
            body: dict[str, Any] = {"model": settings.model, "messages": messages,
                                    "temperature": settings.temperature, **structured_fields(form, schema, name)}
            try:
                text, incomplete, usage = self._call(ctx, settings, body, parse, headers, key)
            except StageError as exc:
                if known or form == TEXT or not _refuses_form(str(exc)):
                    raise
                logger.warning("openai: {} refused structured output as {!r}; trying the next form",
                               settings.base_url, form)
                self._trying[server] = trying + 1
                continue
            answer = strip_reasoning(text)[0].strip()  # a reasoning model thinks before its JSON
            doc = json_reply(answer)
            if not known:
                if form == TEXT:
                    self._form[server] = TEXT
                    logger.info("openai: {} takes no JSON schema in any known form: asking for text", settings.base_url)
                elif doc is not None and not incomplete and answer.startswith("{"):
                    self._form[server] = form  # nothing but the JSON: constrained, not merely asked for
                else:  # ignored, it seems: this reply is read as text, and the next call tries the next form
                    self._trying[server] = trying + 1
            return text, doc, incomplete, usage

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


REFUSAL_WORDS = ("response_format", "json_schema", "guided_json", "format", "schema", "grammar", "unrecognized",
                 "unknown", "extra", "not permitted", "unsupported", "not supported", "invalid")


def _refuses_form(message: str) -> bool:
    """A 400/422 about the structured-output field sent (not the context, the token cap or the model)."""
    text = message.lower()
    return ("http 400" in text or "http 422" in text) and any(w in text for w in REFUSAL_WORDS) and not any(
        w in text for w in ("context length", "too large", "maximum context", "must be less", "max_tokens"))


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


# ---- long episodes: an outline, then one call per segment, as structured data where the server can ----

# How each server family constrains a reply to a JSON schema, in the order they are tried: OpenAI's
# `response_format` (also accepted by recent llama.cpp servers, vLLM and Ollama >= 0.5 on /v1), the
# llama.cpp server's own `json_schema` field, vLLM's `guided_json` extra parameter, Ollama's `format`.
# A server that refuses a form (HTTP 400/422) is asked again at once with the next; one that ignores it
# (a reply that is not the JSON asked for) is still answered as text, and the next call tries the next
# form. What works is remembered per server and model; after the last form, the writer asks for text.
OUTLINE_FINDING_WORDS = 30
STRUCTURED_FORMS = ("response_format", "json_schema", "guided_json", "format")
TEXT = "text"


def structured_fields(form: str, schema: dict[str, Any], name: str) -> dict[str, Any]:
    if form == "response_format":
        return {"response_format": {"type": "json_schema", "json_schema": {"name": name, "strict": True,
                                                                            "schema": schema}}}
    if form in ("json_schema", "guided_json", "format"):
        return {form: schema}
    return {}


def turns_schema(hosts: list[str], intro: bool, outro: bool) -> dict[str, Any]:
    turn = {"type": "object", "additionalProperties": False, "required": ["speaker", "text"],
            "properties": {"speaker": {"type": "string", "enum": list(hosts)}, "text": {"type": "string"}}}
    turns = {"type": "array", "items": turn, "minItems": 2}
    keys = [*(["intro"] if intro else []), "turns", *(["outro"] if outro else [])]
    return {"type": "object", "additionalProperties": False, "required": keys, "properties": dict.fromkeys(keys, turns)}


OUTLINE_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["segments"],
    "properties": {"segments": {"type": "array", "minItems": 1, "items": {
        "type": "object", "additionalProperties": False, "required": ["label", "findings", "words"],
        "properties": {"label": {"type": "string"}, "findings": {"type": "array", "items": {"type": "integer"}},
                       "words": {"type": "integer"}}}}},
}


def json_reply(text: str) -> Any:
    """The JSON object in a reply (a code fence around it allowed), or None."""
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.rsplit("```", 1)[0]
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        doc = json.loads(body[start:end + 1])
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def turns_markdown(doc: dict[str, Any], request: SegmentRequest) -> str | None:
    """Structured turns as the script's markdown, or None when `doc` is not the turns asked for."""
    out: list[str] = []
    for key, heading in (("intro", request.outline.intro_heading), ("turns", request.heading),
                         ("outro", request.outline.outro_heading)):
        items = doc.get(key)
        if not isinstance(items, list):
            if key == "turns":
                return None
            continue
        out += [heading, ""]
        for t in items:
            if isinstance(t, dict) and isinstance(t.get("speaker"), str) and isinstance(t.get("text"), str):
                out += [f"**{t['speaker'].strip()}:** {' '.join(t['text'].split())}", ""]
    return "\n".join(out)


def _cast_line(episode: EpisodeInput, hosts: list[str]) -> str:
    """Who speaks, for the outline and segment prompts: the cast with each speaker's part as the format gives
    it, and in what language (two English hosts in conversation: the one line they have always had)."""
    show = show_for(episode.show, hosts)
    if len(hosts) == 2 and show.format == "conversation" and language.primary(show.language) == "en":
        return f"Two hosts talk to each other: {hosts[0]} and {hosts[1]}."
    lang = language.name(show.language)
    return (f"Format: {FORMAT_LINES[show.format]}\n\nThe cast ({len(show.cast)} speaker(s)):\n{cast_lines(show)}\n"
            f"{speaker_rule(show)}\n\nLanguage: {lang} ({show.language}): write every spoken word in {lang}.")


def outline_prompt(episode: EpisodeInput, research: ResearchOutput, hosts: list[str], planned: Outline,
                   words_per_minute: int) -> str:
    return _template("outline.md.tmpl").safe_substitute(
        topic=episode.topic, title_line=f'\nTitle: "{episode.title}".' if episode.title else "",
        notes_line=f"\nFocus: {episode.notes}" if episode.notes else "", cast_line=_cast_line(episode, hosts),
        minutes=f"{planned.target / words_per_minute:.0f}", target=planned.target, count=len(planned.segments),
        # enough of each finding to plan with: a long episode's research would not fit a small model's
        # context whole, and each segment call gets its own findings in full
        research=research_block(research, words=OUTLINE_FINDING_WORDS), plan=planned.text())


def segment_rules(hosts: list[str], request: SegmentRequest, n_findings: int, structured: bool,
                  tag: str = "en") -> str:
    own = ", ".join(f"[{n}]" for n in request.segment.findings)
    names = " or ".join(f'"{h}"' for h in hosts)
    forms = " or ".join(f"`**{h}:** text`" for h in hosts)
    rules = [
        (f"Reply with only a JSON object of the form given by the schema: each turn is "
         f'{{"speaker": {names}, "text": "what they say"}}.' if structured else
         f"Every spoken line has exactly the form {forms}: one turn per line, a blank line between turns."),
        ("The speakers take turns, and each says a fair share. " if len(hosts) > 1 else "")
        + f"About {request.segment.words} spoken words in all, counting every turn: no fewer, no more.",
        f"Take facts only from the findings below and cite each with its number right after it, such as {own}; "
        f"use only numbers 1 to {n_findings}, never invent one.",
        "Say nothing the other segments already say; build on it instead.",
        "No stage directions or sound cues, no placeholders, and no square brackets except citations.",
        language_rule(tag),
    ]
    return "\n".join(f"- {r}" for r in rules)


def segment_prompt(episode: EpisodeInput, research: ResearchOutput, hosts: list[str], request: SegmentRequest,
                   structured: bool) -> str:
    seg = request.segment
    if request.first and request.last:
        frame = " Open the show and close it."
    elif request.first:
        frame = (f" This segment opens the show: first an intro (`{request.outline.intro_heading}`) where "
                 f"{hosts[0]} welcomes the listeners and says what the episode covers, then `{request.heading}`."
                 if not structured else " This segment opens the show: the intro turns welcome the listeners "
                 "and say what the episode covers. Do not say goodbye.")
    elif request.last:
        frame = (f" This segment closes the show: after `{request.heading}`, an outro "
                 f"(`{request.outline.outro_heading}`) where the hosts sum up and say goodbye." if not structured else
                 " This segment closes the show: the outro turns sum up and say goodbye. Do not welcome anyone.")
    else:
        frame = (" The episode goes on before and after this segment: do not welcome the listeners, introduce "
                 "yourselves or say goodbye.")
    if not structured and not request.first:
        frame += f" Start with the heading line `{request.heading}`."
    return _template("segment.md.tmpl").safe_substitute(
        number=seg.number, count=len(request.outline.segments), topic=episode.topic,
        title_line=f'\nTitle: "{episode.title}".' if episode.title else "",
        notes_line=f"\nFocus: {episode.notes}" if episode.notes else "", cast_line=_cast_line(episode, hosts),
        outline=request.outline.text(), summary=request.summary, label=seg.label, words=seg.words, frame=frame,
        rules=segment_rules(hosts, request, len(research.findings), structured, episode.show.language),
        research=research_block(research, set(seg.findings)))
