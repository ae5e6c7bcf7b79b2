"""Loopback language models for the writer's tests and benchmark: each reads podspool's prompt as a model
would and answers in its own style, as an OpenAI-compatible `/chat/completions` server on 127.0.0.1.

They are written from the prompt's words and from how real models format dialogue, not from the
normaliser: `obedient` follows the prompt's rules to the letter (it takes the heading, turn and
citation forms from the rules text itself), the other styles answer the way local models commonly
do, and the bad ones fail in the ways a writer must survive.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fakeapi import FakeApi, Reply, Request


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
