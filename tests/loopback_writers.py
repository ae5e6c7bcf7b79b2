"""Loopback language models for the writer's tests and benchmark: each reads podspool's prompt as a model
would and answers in its own style, as an OpenAI-compatible `/chat/completions` server on 127.0.0.1.

They are written from the prompt's words and from how real models format dialogue, not from the
normaliser: `obedient` follows the prompt's rules to the letter (it takes the heading, turn and
citation forms from the rules text itself), the other styles answer the way local models commonly
do, and the bad ones fail in the ways a writer must survive.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fakeapi import FakeApi, Reply, Request

DAEMON_CONFIG = """
[research]
provider = "local"
source_roots = ["{repo}"]
[production]
provider = "openai"
{production}[audio]
provider = "sim"
[providers.sim]
latency_ms = 0
[providers.openai]
base_url = "{base_url}/v1"
max_retry_time_s = 2
[rate_limits]
openai = "6000/minute"
[limits]
retry_backoff_s = 0.05
inbox_settle_s = 0.2
[logging]
stderr = false
"""


def daemon_config(repo: Path, base_url: str, production: str = "") -> str:
    """A daemon's podspool.toml: local research within `repo`, the OpenAI-compatible writer at `base_url`
    (a loopback model), sim speech; `production` adds lines to [production]."""
    return DAEMON_CONFIG.format(repo=repo, base_url=base_url, production=production)


@dataclass
class Prompt:
    """What a model takes from podspool's prompt: the cast as it lists it (`- Name: part`), the format and
    the language it names."""

    topic: str
    title: str | None
    hosts: tuple[str, ...]
    findings: list[tuple[int, str]]
    min_words: int
    max_words: int
    rules: list[str]
    revising: bool = False
    feedback: str = ""
    parts: tuple[str, ...] = ()  # each speaker's part as the prompt words it ("the guest expert", ...)
    format: str = "conversation"
    language: str = "en"

    @classmethod
    def read(cls, messages: list[dict[str, Any]]) -> Prompt:
        first = next(m["content"] for m in messages if m["role"] == "user")
        last = messages[-1]["content"]
        two = re.search(r"Two hosts talk to each other: (.+?) and (.+?)\.\s*$", first, re.M)
        cast_block = re.search(r"^The cast \(\d+ speaker\(s\)\):\n((?:- .+\n?)+)", first, re.M)
        cast = re.findall(r"^- (.+?): (.+)$", cast_block.group(1), re.M) if cast_block else []
        words = re.search(r"Between (\d+) and (\d+) spoken words", first)
        rules = first.split("Rules:", 1)[1].split("Research", 1)[0]
        title = re.search(r'^Title: "(.+)"\.$', first, re.M)
        assert (two or cast) and words, "not a podspool prompt"
        fmt = re.search(r"^Format: an? (?:news )?(\w+)", first, re.M)
        lang = re.search(r"^Language: .*?\(([A-Za-z0-9-]+)\)", first, re.M)
        revising = "failed these quality checks" in last
        return cls(topic=re.search(r'about "(.+?)"', first).group(1),  # type: ignore[union-attr]
                   title=title.group(1) if title else None,
                   hosts=tuple(n for n, _ in cast) if cast else (two.group(1), two.group(2)),  # type: ignore[union-attr]
                   parts=tuple(p for _, p in cast) if cast else ("a host", "a host"),
                   format=fmt.group(1) if fmt else "conversation", language=lang.group(1) if lang else "en",
                   findings=[(int(n), t) for n, t in re.findall(r"^\[(\d+)\] (.+)$", first, re.M)],
                   min_words=int(words.group(1)), max_words=int(words.group(2)),
                   rules=[r.strip()[2:] for r in rules.strip().splitlines() if r.strip().startswith("- ")],
                   revising=revising, feedback=last if revising else "")

    def who(self, part: str) -> list[int]:
        """The speakers whose part names `part` ("guest", "moderator", "side 1")."""
        return [i for i, p in enumerate(self.parts) if part in p]


@dataclass
class Answer:
    content: str | None
    finish_reason: str = "stop"
    usage: bool = True
    message_extra: dict[str, Any] = field(default_factory=dict)


Model = Callable[[Prompt], Answer]


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def label_of(text: str) -> str:
    return " ".join(re.findall(r"[A-Za-z']+", text)[:4])


# a model that writes the language asked for: its own words around the findings' (which the tests give
# in that language)
PHRASES = {
    "en": {"welcome": "Hello and welcome. Today we are talking about {topic}.",
           "notes": "Thanks. We read {n} notes on it, and every point today comes from them.",
           "point": "Point {i} is about {label}.", "good": "So that is point {i}, and it is a good one.",
           "bye": "That is all for {topic}. Thank you for listening.", "later": "See you next time, and keep asking questions.",
           "ask": "Tell us about point {i}, {label}.", "hello": "Hello, I am {name}, glad to be here.",
           "agree": "I agree with point {i}, and the notes back it up."},
    "de": {"welcome": "Hallo und willkommen. Heute sprechen wir über {topic}.",
           "notes": "Danke. Wir haben {n} Notizen dazu gelesen, und alles heute stammt daraus.",
           "point": "Punkt {i} handelt von {label}.", "good": "Das ist also Punkt {i}, und er ist gut.",
           "bye": "Das war alles zu {topic}. Danke fürs Zuhören.", "later": "Bis zum nächsten Mal, und bleibt neugierig.",
           "ask": "Erzähl uns von Punkt {i}, {label}.", "hello": "Hallo, ich bin {name}, schön, dabei zu sein.",
           "agree": "Bei Punkt {i} stimme ich zu, und die Notizen belegen es."},
    "es": {"welcome": "Hola y bienvenidos. Hoy hablamos de {topic}.",
           "notes": "Gracias. Leímos {n} notas sobre el tema, y todo lo de hoy viene de ellas.",
           "point": "El punto {i} trata de {label}.", "good": "Ese es el punto {i}, y es bueno.",
           "bye": "Eso es todo sobre {topic}. Gracias por escuchar.", "later": "Hasta la próxima, y sigan preguntando.",
           "ask": "Cuéntanos el punto {i}, {label}.", "hello": "Hola, soy {name}, me alegra estar aquí.",
           "agree": "Estoy de acuerdo con el punto {i}, y las notas lo respaldan."},
}


def dialogue(p: Prompt) -> list[tuple[str, list[tuple[int, str]]]]:
    """The script as (section, [(speaker index, words with citations)]): a two-host conversation, or the
    format and cast the prompt names, in its language — style-free content."""
    if len(p.hosts) != 2 or p.format != "conversation" or p.language != "en":
        return cast_dialogue(p)
    return _two_hosts(p)


def cast_dialogue(p: Prompt) -> list[tuple[str, list[tuple[int, str]]]]:
    """Every format with a cast of one to four, as the prompt gives each speaker's part."""
    say = PHRASES.get(p.language.split("-")[0], PHRASES["en"])
    n = len(p.hosts)
    topic = p.topic
    guests, moderators = p.who("guest"), p.who("moderator")
    sides = [p.who("side 1"), p.who("side 2")]
    interview = bool(guests) and n > 1
    debate = bool(sides[0] and sides[1])
    hosts = [i for i in range(n) if i not in guests] if interview else list(range(n))
    opener = moderators[0] if moderators else hosts[0]
    intro = [(opener, say["welcome"].format(topic=topic))]
    intro += [(i, say["hello"].format(name=p.hosts[i])) for i in range(n) if i != opener]
    if n > 1:
        intro.append(((opener + 1) % n, say["notes"].format(n=len(p.findings))))
    else:
        intro.append((0, say["notes"].format(n=len(p.findings))))
    parts: list[tuple[str, list[tuple[int, str]]]] = [("intro", intro)]
    for i, (number, text) in enumerate(p.findings):
        said = sentences(text)
        half = max(1, (len(said) + 1) // 2)
        first, second = " ".join(said[:half]), " ".join(said[half:])
        label = label_of(text).lower()
        if n == 1:
            turns = [(0, f"{say['point'].format(i=i + 1, label=label)} {text} [{number}]")]
        elif interview:
            host, guest = hosts[i % len(hosts)], guests[i % len(guests)]
            turns = [(host, say["ask"].format(i=i + 1, label=label)), (guest, f"{text} [{number}]")]
        elif debate:
            a, b = sides[i % 2], sides[1 - i % 2]
            turns = [(a[i // 2 % len(a)], f"{say['point'].format(i=i + 1, label=label)} {first} [{number}]"),
                     (b[i // 2 % len(b)], f"{second or say['agree'].format(i=i + 1)} [{number}]")]
        else:
            who, other = i % n, (i + 1) % n
            turns = [(who, f"{say['point'].format(i=i + 1, label=label)} {first} [{number}]"),
                     (other, f"{second} [{number}]" if second else say["good"].format(i=i + 1))]
            if n > 2:
                turns.append(((i + 2) % n, f"{say['agree'].format(i=i + 1)} [{number}]"))
        parts.append((label_of(text), turns))
    parts.append(("outro", [((opener + 1) % n, say["bye"].format(topic=topic)), (opener, say["later"])]))
    return parts


def _two_hosts(p: Prompt) -> list[tuple[str, list[tuple[int, str]]]]:
    """The conversation of two hosts in English, as the loopback models have always written it."""
    a_topic = p.topic[0].lower() + p.topic[1:] if p.topic.split()[0] in ("The", "A", "An") else p.topic
    intro = [(0, f"Hello and welcome. Today we are talking about {a_topic}."),
             (1, f"Thanks. We read {len(p.findings)} notes on it, and every point today comes from them.")]
    parts: list[tuple[str, list[tuple[str, str]]]] = [("intro", intro)]
    for i, (n, text) in enumerate(p.findings):
        said = sentences(text)
        half = max(1, (len(said) + 1) // 2)
        first, second = " ".join(said[:half]), " ".join(said[half:])
        who = i % 2
        turns = [(who, f"Point {i + 1} is about {label_of(text).lower()}. {first} [{n}]")]
        turns.append((1 - who, f"{second} [{n}]" if second else f"So that is point {i + 1}, and it is a good one."))
        parts.append((label_of(text), turns))
    parts.append(("outro", [(1, f"That is all for {a_topic}. Thank you for listening."),
                            (0, "See you next time, and keep asking questions.")]))
    return parts


# ---- styles of a model that means well ------------------------------------------------------------


def obedient(p: Prompt) -> Answer:
    """Every rule of the prompt, literally: heading, turn and citation forms are read from the rules."""
    sections_rule = next(r for r in p.rules if "sections" in r)
    heads = re.findall(r"`(## [^`]+)`", sections_rule)
    intro, segment, outro = heads[0], next(h for h in heads if " N" in h), heads[-1]
    turn_rule = next(r for r in p.rules if "spoken line" in r)
    forms = re.findall(r"`([^`]*text)`", turn_rule)
    title_rule = next(r for r in p.rules if "first line" in r.lower())
    title_form = re.search(r"`([^`]+)`", title_rule).group(1)  # type: ignore[union-attr]
    lines = [title_form.replace("<title>", p.title or p.topic), ""]
    number = 0
    for name, turns in dialogue(p):
        if name == "intro":
            lines += [intro, ""]
        elif name == "outro":
            lines += [outro, ""]
        else:
            number += 1
            lines += [segment.replace("N", str(number), 1).replace("<short label>", name), ""]
        for who, words in turns:
            lines += [forms[who].replace("text", words), ""]
    return Answer("\n".join(lines))


def plain_names(p: Prompt) -> Answer:
    """`Alex: …` lines, a Title: line, no headings, a chatty preamble and sign-off (common in chat models)."""
    out = [f"Here is the podcast script about {p.topic}:", "", f"Title: {p.title or p.topic}", ""]
    for _, turns in dialogue(p):
        out += [f"{p.hosts[who]}: {words}" for who, words in turns]
    out += ["", "Let me know if you would like any changes to the script!"]
    return Answer("\n".join(out))


def host_letters(p: Prompt) -> Answer:
    """`HOST A:` / `HOST B:` (small local models), bold segment labels, cues, a reasoning block first."""
    out = ["<think>The user wants a two-host script. I will use HOST A and HOST B.</think>", "",
           f"# {p.topic.upper()}", "", "[Intro music fades in]", ""]
    for name, turns in dialogue(p):
        out += [f"**{name.title()}**", ""]
        for i, (who, words) in enumerate(turns):
            cue = " [laughs]" if i == 1 else ""
            out += [f"HOST {'AB'[who]}:{cue} {words}", ""]
    out += ["[Outro music]"]
    return Answer("\n".join(out))


def speaker_list(p: Prompt) -> Answer:
    """`- **Speaker 1**: …` list items under `###` headings, `(pause)` cues, and its own sources list."""
    out = [f"## {p.title or p.topic}", ""]
    for name, turns in dialogue(p):
        out += [f"### {name.capitalize()}"]
        out += [f"- **Speaker {who + 1}**: {'(pause) ' if who else ''}{words}" for who, words in turns]
        out.append("")
    out += ["**Sources:**", *[f"{n}. Research note {n}" for n, _ in p.findings]]
    return Answer("\n".join(out))


def person_tags(p: Prompt) -> Answer:
    """Podcastfy's `<Person1>…</Person1><Person2>…</Person2>`, no title, turns run together."""
    chunks = [f"<Person{who + 1}>{words}</Person{who + 1}>" for _, turns in dialogue(p) for who, words in turns]
    return Answer("".join(chunks))


def caps_names(p: Prompt) -> Answer:
    """`ALEX (excited): …`, a label alone on its line above the words, `*sighs*`, inside a code fence."""
    a, b = (h.upper() for h in p.hosts)
    out = ["```markdown", f"# {p.title or p.topic}", ""]
    for _, turns in dialogue(p):
        for i, (who, words) in enumerate(turns):
            name = (a, b)[who]
            if i == 0:
                out += [f"{name} (excited): {words}", ""]
            else:
                out += [f"**{name}**", f"*sighs* {words}", ""]
    out.append("```")
    return Answer("\n".join(out))


def chatty_bold(p: Prompt) -> Answer:
    """Common chat-model output: preamble, `**Episode Title:**`, bold bracketed cues and segment names,
    `[Source n]` citations, a rule and an end marker."""
    out = [f'Here is a script for a podcast episode on "{p.topic}":', "",
           f'**Episode Title:** "{p.title or p.topic}"', "", "**[Intro Music]**", ""]
    number = 0
    for name, turns in dialogue(p):
        if name not in ("intro", "outro"):
            number += 1
            out += [f"**[Segment {number}: {name}]**", ""]
        for i, (who, words) in enumerate(turns):
            words = re.sub(r"\[(\d+)\]", r"[Source \1]", words)
            out += [f"**{p.hosts[who]}:** {words}", ""]
            if i == 0 and name == "intro":
                out += [f"**({p.hosts[1 - who]} laughs)**", ""]
    out += ["---", "", "**[Outro Music]**", "**End of Episode**"]
    return Answer("\n".join(out))


STYLES: dict[str, Model] = {"chatty_bold": chatty_bold, "obedient": obedient, "plain_names": plain_names, "host_letters": host_letters,
                            "speaker_list": speaker_list, "person_tags": person_tags, "caps_names": caps_names}


# ---- bad replies ----------------------------------------------------------------------------------


def empty(p: Prompt) -> Answer:
    return Answer("")


def cut(p: Prompt) -> Answer:
    text = obedient(p).content or ""
    return Answer(text[: len(text) // 3], finish_reason="length")


def one_speaker(p: Prompt) -> Answer:
    return Answer(f"# {p.topic}\n\n" + "\n\n".join(f"**{p.hosts[0]}:** {w}" for _, t in dialogue(p) for _, w in t))


def invented(p: Prompt) -> Answer:
    return Answer((obedient(p).content or "").replace("[2]", "[42]").replace("[1]", "[17]"))


def refusal(p: Prompt) -> Answer:
    return Answer("I'm sorry, but I can't help with creating that content.")


def sloppy_then_fixed(p: Prompt) -> Answer:
    """Forgets the citations on the first draft; fixes them when the feedback asks."""
    text = obedient(p).content or ""
    return Answer(text if p.revising else re.sub(r" \[\d+\]", "", text))


BAD: dict[str, Model] = {"empty": empty, "cut": cut, "one_speaker": one_speaker, "invented": invented,
                         "refusal": refusal}


def chat_handler(model: Model, *, usage: bool = True, model_name: str = "llama3.1") -> Callable[[Request], Reply]:
    """An OpenAI-compatible chat completion answered by `model`."""

    def answer(request: Request) -> Reply:
        body = request.json()
        a = model(Prompt.read(body["messages"]))
        doc: dict[str, Any] = {
            "id": "chatcmpl-loop", "object": "chat.completion", "model": model_name,
            "choices": [{"index": 0, "finish_reason": a.finish_reason,
                         "message": {"role": "assistant", "content": a.content, **a.message_extra}}]}
        if usage and a.usage:
            prompt_chars = sum(len(m["content"] or "") for m in body["messages"])
            doc["usage"] = {"prompt_tokens": prompt_chars // 4, "completion_tokens": len(a.content or "") // 4}
        return Reply(body=doc)

    return answer


def chat_server(model: Model, **kw: Any) -> FakeApi:
    return FakeApi(chat_handler(model, **kw))


# ---- long episodes: a model that keeps to the word budget it is given, in text or as JSON ------------

_WORDS = ("river stone garden window letter market winter candle harbor forest bridge meadow signal pocket "
          "ladder basket engine mirror lantern valley island rocket blanket orchard tunnel kettle pebble feather "
          "canyon thunder marble copper willow saddle anchor cabin violin ribbon | walks builds finds keeps holds "
          "moves lifts drops turns shows opens shapes warms guides carries")
_NOUNS, _VERBS = (tuple(part.split()) for part in _WORDS.split("|"))
_FILLER_FRAMES = ("So the {a} {v} the {b}, and that is why the {c} matters here.",
                  "Picture a {a} by the {b}: it {v} the {c} a little more each year.",
                  "What stays with me is how the {a} {v} a {b} near the {c}.",
                  "In other words, a {a} {v} the {b} before the {c} does.")


def spoken_count(text: str) -> int:
    """Words as the gates count them: citations are not spoken."""
    return len(re.findall(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?", re.sub(r"\[[\d,\s-]+\]", "", text)))


def filler(seed: str) -> Callable[[], str]:
    """Sentences that say something new each time (a model that follows its budget does not repeat)."""
    import random
    rng = random.Random(seed)

    def next_sentence() -> str:
        a, b, c = rng.sample(_NOUNS, 3)
        v = rng.choice(_VERBS)
        return rng.choice(_FILLER_FRAMES).format(a=a, b=b, c=c, v=v)

    return next_sentence


def budget_turns(quotes: list[tuple[int, str]], budget: int, seed: str, first: int = 0) -> list[tuple[int, str]]:
    """(speaker 0/1, text) turns of exactly `budget` spoken words: the findings' sentences with their
    citations first, then new sentences of its own, about 45 words a turn, speakers alternating."""
    pieces = [f"{s} [{n}]" for n, text in quotes for s in sentences(text)]
    more = filler(seed)
    turns: list[tuple[int, str]] = []
    current: list[str] = []
    total = 0
    while total < budget:
        piece = pieces.pop(0) if pieces else more()
        n = spoken_count(piece)
        if total + n > budget:  # cut the last sentence to the word
            kept = piece.split()[: budget - total]
            while spoken_count(" ".join(kept)) > budget - total:
                kept.pop()
            piece = " ".join(kept).rstrip(",;:") + "."
            n = spoken_count(piece)
            if n == 0:
                break
        current.append(piece)
        total += n
        if spoken_count(" ".join(current)) >= 45 or total >= budget:
            turns.append(((first + len(turns)) % 2, " ".join(current)))
            current = []
    return turns


@dataclass
class SegmentAsk:
    """What a model takes from podspool's prompt for one segment of a long episode."""

    number: int
    count: int
    label: str
    words: int
    hosts: tuple[str, str]
    findings: list[tuple[int, str]]
    opens: bool
    closes: bool
    revising: bool
    feedback: str

    @classmethod
    def read(cls, messages: list[dict[str, Any]]) -> SegmentAsk | None:
        first = next(m["content"] for m in messages if m["role"] == "user")
        part = re.search(r"Write part (\d+) of (\d+) ", first)
        if not part:
            return None
        two = re.search(r"Two hosts talk to each other: (.+?) and (.+?)\.\s*$", first, re.M)
        cast = re.search(r"^The cast \(\d+ speaker\(s\)\):\n((?:- .+\n?)+)", first, re.M)  # another format
        names = re.findall(r"^- (.+?): ", cast.group(1), re.M) if cast else []
        label = re.search(r'Write segment \d+: "(.+)"\. About (\d+) spoken words', first)
        assert (two or len(names) == 2) and label, "not a podspool segment prompt (of two speakers)"
        own = first.split("Findings for this segment", 1)[1]
        last = messages[-1]["content"]
        return cls(number=int(part.group(1)), count=int(part.group(2)), label=label.group(1),
                   words=int(label.group(2)), hosts=(two.group(1), two.group(2)) if two else (names[0], names[1]),
                   findings=[(int(n), t) for n, t in re.findall(r"^\[(\d+)\] (.+)$", own, re.M)],
                   opens="This segment opens the show" in first, closes="This segment closes the show" in first,
                   revising="failed these quality checks" in last, feedback=last)


def outline_reply(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The plan the prompt offers, as the JSON it asks for (a model that agrees with the plan)."""
    first = next(m["content"] for m in messages if m["role"] == "user")
    if not first.startswith("Plan one podcast episode"):
        return None
    plan = first.split("A plan to start from", 1)[1]
    segments = [{"label": label, "findings": [int(x) for x in re.findall(r"\d+", cites)], "words": int(words)}
                for label, cites, words in re.findall(
                    r"^\d+\. (.+?)(?: \((?:opens|closes) the show\))?: findings ([\d, ]+|none); about (\d+) words$",
                    plan, re.M)]
    return {"segments": segments}


SegmentModel = Callable[[SegmentAsk], "list[tuple[str, list[tuple[int, str]]]] | str"]


def keeps_budget(ask: SegmentAsk) -> list[tuple[str, list[tuple[int, str]]]]:
    """A segment of exactly its budget: intro when it opens the show, outro when it closes it."""
    a, b = ask.hosts
    intro = [(0, f"Hello and welcome to the show. I'm {a}, and I'm here with {b}."),
             (1, f"Thanks, {a}. We have {ask.count} parts for you today, all from our notes.")] if ask.opens else []
    outro = [(1, "That brings us to the end. Thank you for listening."),
             (0, "See you next time, and keep asking questions.")] if ask.closes else []
    framing = sum(spoken_count(t) for _, t in intro + outro)
    body = budget_turns(ask.findings, ask.words - framing, f"{ask.label}/{ask.number}/{ask.revising}")
    parts = [("intro", intro)] if intro else []
    parts.append(("turns", body))
    if outro:
        parts.append(("outro", outro))
    return parts


def segment_markdown(ask: SegmentAsk, parts: list[tuple[str, list[tuple[int, str]]]]) -> str:
    heads = {"intro": "## Intro", "turns": f"## Segment {ask.number}: {ask.label}", "outro": "## Outro"}
    lines: list[str] = []
    for name, turns in parts:
        lines += [heads[name], ""]
        for who, text in turns:
            lines += [f"**{ask.hosts[who]}:** {text}", ""]
    return "\n".join(lines)


STRUCTURED_FIELDS = ("response_format", "json_schema", "guided_json", "format")


def long_form_handler(segment_model: SegmentModel = keeps_budget, *, accepts: tuple[str, ...] = ("response_format",),
                      refuses_others: bool = False, whole: Model | None = None,
                      thinks: bool = False) -> Callable[[Request], Reply]:
    """An OpenAI-compatible server for long episodes. It answers the outline with the plan offered,
    each segment with `segment_model`, and a whole-script prompt with `whole` (default: `budgeted`).
    A JSON schema sent in a form it `accepts` shapes the reply as that JSON; a form it does not take
    is ignored (the reply is text), or refused with HTTP 400 when `refuses_others`. `thinks`: every reply
    opens with a `<think>` block, as reasoning models behind llama.cpp or Ollama send it."""

    def answer(request: Request) -> Reply:
        body = request.json()
        sent = [f for f in STRUCTURED_FIELDS if f in body]
        if sent and sent[0] not in accepts and refuses_others:
            return Reply(status=400, body={"error": {"message": f"Unrecognized request argument: {sent[0]}",
                                                     "type": "invalid_request_error"}})
        schema_form = sent[0] if sent and sent[0] in accepts else None
        messages = body["messages"]
        content: str
        plan = outline_reply(messages)
        ask = SegmentAsk.read(messages) if plan is None else None
        if plan is not None:
            content = json.dumps(plan) if schema_form else "Here is the plan:\n" + json.dumps(plan)
        elif ask is not None:
            parts = segment_model(ask)
            if isinstance(parts, str):  # a reply that is not a segment at all (a refusal, prose)
                content = parts
            elif schema_form:
                content = json.dumps({name: [{"speaker": ask.hosts[w], "text": t} for w, t in turns]
                                      for name, turns in parts})
            else:
                content = segment_markdown(ask, parts)
        else:
            content = ((whole or budgeted)(Prompt.read(messages))).content or ""
        if thinks:
            content = "<think>The user wants turns; I will keep to the budget.</think>\n" + content
        doc = {"id": "chatcmpl-long", "object": "chat.completion", "model": "llama3.1",
               "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
               "usage": {"prompt_tokens": sum(len(m["content"] or "") for m in messages) // 4,
                         "completion_tokens": len(content) // 4}}
        return Reply(body=doc)

    return answer


def budgeted(p: Prompt) -> Answer:
    """A whole script of the middle of the word range it is asked for, in the prompt's own forms."""
    target = (p.min_words + p.max_words) // 2
    a, b = p.hosts
    intro = [(0, f"Hello and welcome. I'm {a}, and I'm here with {b}. Today we are talking about {p.topic}.")]
    outro = [(1, "That is all for today. Thank you for listening.")]
    framing = sum(spoken_count(t) for _, t in intro + outro)
    body = budget_turns(p.findings, target - framing, p.topic)
    # a segment opens where a turn first cites a finding (at most six), so every segment cites one
    parts: list[list[tuple[int, str]]] = []
    cited: set[str] = set()
    for who, text in body:
        new = set(re.findall(r"\[(\d+)\]", text)) - cited
        if (new or not parts) and len(parts) < 6:
            parts.append([])
        cited |= new
        parts[-1].append((who, text))
    lines = [f"# {p.title or p.topic}", "", "## Intro", ""] + [f"**{p.hosts[w]}:** {t}\n" for w, t in intro]
    for i, part in enumerate(parts, 1):
        lines += [f"## Segment {i}: Part {i}", ""] + [f"**{p.hosts[w]}:** {t}\n" for w, t in part]
    lines += ["## Outro", ""] + [f"**{p.hosts[w]}:** {t}\n" for w, t in outro]
    return Answer("\n".join(lines))


def asked(fake: FakeApi) -> list[str]:
    """What each request to the server asked for: "outline", "segment N" or "script", in order."""
    out = []
    for r in fake.requests:
        messages = r.json()["messages"]
        ask = SegmentAsk.read(messages)
        out.append("outline" if outline_reply(messages) is not None else f"segment {ask.number}" if ask else "script")
    return out
