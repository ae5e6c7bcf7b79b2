"""Formats, casts of one to four, and languages on the writing side: through the OpenAI-compatible writer
and a loopback model that follows the prompt, and through the offline local writer, every format with
every cast size it allows gives a script whose turns carry exactly the cast's names and whose gates pass;
the model is asked for the episode's language (seen at the server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from loopback_writers import chat_server, obedient
from podspool.stages import artifacts, fsio
from podspool.stages.base import EpisodeInput, StageContext
from podspool.stages.providers.local.research import LocalResearch
from podspool.stages.providers.local.writer import LocalWriter
from podspool.stages.registry import run_stage
from podspool.stages.script import quality
from podspool.stages.script.format import parse_turns, roles, with_sources
from podspool.stages.script.normalise import normalise
from podspool.stages.settings import ResearchSettings, StageSettings
from podspool.stages.show import SPEAKERS, CastMember, Format, Show, structure_problems

REPO = Path(__file__).resolve().parents[1]
NAMES = ("Ana", "Bo", "Chidi", "Dana")
# every format with every cast size it allows
COMBOS = [(fmt, n) for fmt, (low, high) in SPEAKERS.items() for n in range(low, high + 1)]


def show(fmt: Format, n: int, language: str = "en", roles_: tuple[str, ...] = ()) -> Show:
    cast = tuple(CastMember(name=NAMES[i], role=(roles_[i] if i < len(roles_) else "host"))  # type: ignore[arg-type]
                 for i in range(n))
    return Show(format=fmt, cast=cast, language=language)


def episode(s: Show, source: str = "honeybees", sources: tuple[str, ...] | None = None) -> EpisodeInput:
    return EpisodeInput(episode_id=f"ep_001_{s.format}{len(s.cast)}", batch_id="f", number=1,
                        topic=source.replace("_", " ").capitalize(), show=s,
                        sources=sources or (str(REPO / "examples" / "sources" / f"{source}.md"),))


def settings(provider: str = "local", base_url: str | None = None) -> StageSettings:
    st = StageSettings(research=ResearchSettings(source_roots=[str(REPO), "/"]))
    st.production.provider = provider  # type: ignore[assignment]
    if base_url:
        st.providers.openai.base_url = base_url
        st.providers.openai.timeout_s, st.providers.openai.max_attempts = 2.0, 1
    return st


def produce(tmp: Path, ep: EpisodeInput, st: StageSettings) -> tuple[str, dict]:
    ctx = StageContext(settings=st)
    research = run_stage("research", tmp, ep, ctx)
    assert research.ok, research.error
    result = run_stage("production", tmp, ep, ctx)
    q = fsio.read_json(tmp / artifacts.QUALITY_JSON)
    assert result.ok, (result.error, q.get("reply", "")[:2000])
    return (tmp / artifacts.SCRIPT_MD).read_text(encoding="utf-8"), q


def test_every_combination_is_a_valid_structure() -> None:
    assert all(not structure_problems(show(fmt, n)) for fmt, n in COMBOS)
    assert len(COMBOS) == 14  # conversation, interview, debate 2-4; solo 1; brief 1-4


@pytest.mark.parametrize("fmt,n", COMBOS)
def test_a_model_that_follows_the_prompt_writes_every_format_and_cast(tmp_path: Path, fmt: Format, n: int) -> None:
    s = show(fmt, n)
    with chat_server(obedient) as fake:
        script, q = produce(tmp_path, episode(s), settings("openai", fake.base_url + "/v1"))
    assert len(fake.requests) == 1, q["reasons"]  # passed on the first draft
    speakers = {t.host for t in parse_turns(script)}
    assert speakers == set(s.names)  # exactly the cast: nobody missing, nobody else
    assert q["passed"] and all(g["passed"] for g in q["gates"]), q["reasons"]
    gates = {g["name"] for g in q["gates"]}
    assert ("balance" in gates) == (n > 1) and ("sides" in gates) == (fmt == "debate")
    prompt = fake.requests[0].json()["messages"][1]["content"]
    assert all(f"- {name}: " in prompt for name in s.names)  # the prompt lists the cast with their parts


@pytest.mark.parametrize("fmt,n", COMBOS)
def test_the_local_writer_writes_every_format_and_cast(tmp_path: Path, fmt: Format, n: int) -> None:
    s = show(fmt, n)
    script, q = produce(tmp_path, episode(s, "fermi_paradox"), settings())
    assert {t.host for t in parse_turns(script)} == set(s.names)
    assert q["passed"] and all(g["passed"] for g in q["gates"]), q["reasons"]


def test_a_solo_episode_has_one_speaker_and_no_balance_gate(tmp_path: Path) -> None:
    s = show("solo", 1)
    script, q = produce(tmp_path, episode(s), settings())
    assert {t.host for t in parse_turns(script)} == {"Ana"}
    assert "**Bo:**" not in script and "balance" not in q["scores"]


def test_the_headings_name_the_format(tmp_path: Path) -> None:
    """Chapters are named from the headings: a debate's are its rounds."""
    script, _ = produce(tmp_path, episode(show("debate", 3)), settings())
    heads = [line for line in script.splitlines() if line.startswith("## ")]
    assert heads[0] == "## Opening statements" and heads[1].startswith("## Round 1: ")
    assert heads[-2] == "## Closing statements" and heads[-1] == "## Sources"


def test_cast_roles_decide_the_parts() -> None:
    """An interview's guest is the cast's guest wherever it stands; a debate's moderator likewise."""
    r = roles(show("interview", 3, roles_=("guest", "host", "guest")))
    assert r.guests == ("Ana", "Chidi") and r.hosts == ("Bo",)
    r = roles(show("debate", 4, roles_=("host", "host", "moderator", "host")))
    assert r.moderator == "Chidi" and r.sides == (("Ana", "Dana"), ("Bo",))
    assert roles(show("debate", 3)).moderator == "Ana"  # an odd cast without one: the first moderates
    r = roles(show("interview", 2, roles_=("guest", "guest")))
    assert r.hosts == ("Ana",) and r.guests == ("Bo",)  # guests only: the first of them asks


def test_an_interviews_balance_favours_the_guest() -> None:
    s = show("interview", 2)
    research = LocalResearch().research(episode(s), StageContext(settings=settings()))
    # the host talks most: a conversation's balance, but not an interview's
    lines = ["# Bees", "", "## Welcome", ""]
    for n, f in enumerate(research.findings[:4], 1):
        lines += [f"**Ana:** {f.text} [{n}]", "", f"**Bo:** Yes, that is right [{n}].", ""]
    report = quality.evaluate(with_sources("\n".join(lines), research.findings), research, settings(), show=s)
    balance = next(g for g in report.gates if g.name == "balance")
    assert not balance.passed and "guest side (Bo)" in balance.reason


def test_a_debate_needs_both_sides_cited() -> None:
    s = show("debate", 2)
    research = LocalResearch().research(episode(s), StageContext(settings=settings()))
    lines = ["# Bees", "", "## Round 1: Dance", ""]
    for n, f in enumerate(research.findings[:4], 1):
        lines += [f"**Ana:** {f.text} [{n}]", "", f"**Bo:** {f.text.replace('.', ', I disagree.')}", ""]
    report = quality.evaluate(with_sources("\n".join(lines), research.findings), research, settings(), show=s)
    sides = next(g for g in report.gates if g.name == "sides")
    assert not sides.passed and "the side of Bo cites no finding" in sides.reason


@pytest.mark.parametrize("label,who", [("Speaker 3", "Chidi"), ("<Person2>", "Bo"), ("Host B", "Bo"),
                                       ("Guest", "Chidi"), ("Moderator", "Ana")])
def test_generic_labels_go_to_the_cast(label: str, who: str) -> None:
    """In order of first appearance, and a role's label to the speaker in that part."""
    s = show("interview", 3, roles_=("moderator", "host", "guest")) if label in ("Guest", "Moderator") \
        else show("conversation", 4)
    first = {"Speaker 3": "Speaker 1: Hi [1].\nSpeaker 2: Yo.\n", "<Person2>": "<Person1>Hi [1].</Person1>",
             "Host B": "Host A: Hi [1].\n"}.get(label, "")
    said = "<Person2>Hello there.</Person2>" if label == "<Person2>" else f"{label}: Hello there."
    draft = normalise(first + said, s, "Bees")
    assert not draft.problems
    assert draft.speakers[label.strip("<>")] == who


GERMAN = ("Honigbienen zeigen einander mit einem Tanz, wo es Futter gibt. Der Forscher Karl von Frisch hat "
          "diesen Tanz entschlüsselt.\n\nDer Winkel des Tanzes zeigt die Richtung zur Sonne. Die Dauer des "
          "Schwänzellaufs zeigt die Entfernung.\n\nEin Volk sammelt so Nektar von Blüten, die kilometerweit "
          "entfernt sind. Die Bienen lernen den Weg schnell.\n")
SPANISH = ("Las abejas bailan para decir a las demás dónde hay comida. El científico Karl von Frisch descifró "
           "ese baile.\n\nEl ángulo del baile marca la dirección respecto al sol. La duración marca la "
           "distancia.\n\nUna colmena recoge néctar de flores que están a kilómetros. Las abejas aprenden el "
           "camino muy rápido.\n")


@pytest.mark.parametrize("tag,text,name", [("de", GERMAN, "German"), ("es", SPANISH, "Spanish")])
def test_the_model_is_asked_for_the_language(tmp_path: Path, tag: str, text: str, name: str) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text(text, encoding="utf-8")
    s = show("interview", 2, language=tag)
    folder = tmp_path / "ep"
    folder.mkdir()
    with chat_server(obedient) as fake:
        st = settings("openai", fake.base_url + "/v1")
        st.production.min_words = 80  # three short paragraphs of notes
        script, q = produce(folder, episode(s, sources=(str(notes),)), st)
    prompt = fake.requests[0].json()["messages"][1]["content"]
    assert f"Language: {name} ({tag}): write the whole script in {name}." in prompt
    assert f"Write every spoken word and every section label in {name}" in prompt
    assert q["passed"], q["reasons"]
    readability = next(g for g in q["gates"] if g["name"] == "readability")
    assert readability["passed"] and not readability["note"]  # judged, by the language's own formula
    assert ("Hallo und willkommen" if tag == "de" else "Hola y bienvenidos") in script


def test_a_language_no_gate_formula_knows_is_not_failed_but_said(tmp_path: Path) -> None:
    s = show("solo", 1, language="hi")
    research = LocalResearch().research(episode(s), StageContext(settings=settings()))
    body = "# मधुमक्खी\n\n## Intro\n\n" + "\n\n".join(
        f"**Ana:** मधुमक्खियाँ नाचकर बताती हैं कि भोजन कहाँ है, यह बात {n} है [{n}]।" for n in range(1, 6))
    report = quality.evaluate(with_sources(body, research.findings), research, settings(), show=s)
    readability = next(g for g in report.gates if g.name == "readability")
    assert readability.passed and "no readability formula for Hindi" in readability.note
    assert report.words == 5 * 12  # Devanagari words counted whole, by the spaces between them


def test_the_local_writer_writes_english_only() -> None:
    assert LocalWriter.languages == frozenset({"en"})


@pytest.mark.parametrize("api", ["search", "sonar", "agent"])
def test_research_asks_for_the_episodes_language(api: str) -> None:
    """Perplexity's Search API filters results by language; Sonar and the agent are asked in words."""
    import dataclasses

    from fakeapi import FakeApi, Reply
    from podspool.stages.providers.perplexity.research import PerplexityResearch
    from provider_helpers import EPISODE, make_ctx

    results = {"id": "s", "results": [{"title": "Bienen", "url": "https://a.example/b", "snippet": "Bienen tanzen."}]}
    sonar = {"id": "c", "model": "sonar", "usage": {"prompt_tokens": 1, "completion_tokens": 1},
             "choices": [{"index": 0, "message": {"role": "assistant", "content": "Bienen tanzen.[1]"}}],
             "citations": ["https://a.example/b"]}
    agent = {"id": "r", "status": "completed", "model": "x", "usage": {"input_tokens": 1, "output_tokens": 1},
             "output": [{"type": "message", "content": [{"type": "output_text", "text": "Bienen tanzen.",
                                                         "annotations": [{"type": "url_citation",
                                                                          "url": "https://a.example/b"}]}]}]}
    german = dataclasses.replace(EPISODE, show=show("conversation", 2, language="de"))
    with FakeApi(Reply(body={"search": results, "sonar": sonar, "agent": agent}[api])) as fake:
        PerplexityResearch().research(german, make_ctx(fake, "perplexity", api=api))
        PerplexityResearch().research(EPISODE, make_ctx(fake, "perplexity", api=api))
    de, en = (r.json() for r in fake.requests)
    if api == "search":
        assert de["search_language_filter"] == ["de"] and "search_language_filter" not in en
    else:
        asked = json.dumps(de, ensure_ascii=False)
        assert "the episode is in German (de)" in asked and "Language:" not in json.dumps(en)


def test_a_long_episodes_outline_and_segments_carry_the_cast_and_language() -> None:
    """Long episodes are planned and written in several calls: each is told the cast's parts and the language."""
    import dataclasses

    from podspool.stages.base import Finding, ResearchOutput
    from podspool.stages.providers.openai.writer import outline_prompt, segment_rules
    from podspool.stages.script import segments

    s = dataclasses.replace(show("interview", 2, language="es"), minutes=20)
    found = [Finding(text=f"Las abejas bailan, dato {i}.", source="notas.md", score=1 / i) for i in range(1, 13)]
    planned = segments.plan_outline("Abejas", found, 20 * 165)
    ep = episode(s)
    prompt = outline_prompt(ep, ResearchOutput(provider="local", findings=found, citations=[], searched=[]),
                            s.names, planned, 165)
    assert "- Ana: the host (interviewer)\n- Bo: the guest expert" in prompt
    assert "Language: Spanish (es): write every spoken word in Spanish." in prompt
    assert "Two hosts" not in prompt
    request = type("R", (), {"segment": planned.segments[0]})()
    assert "in Spanish (language tag es)" in segment_rules(s.names, request, 12, False, "es")  # type: ignore[arg-type]


def test_a_japanese_episode_is_researched_offline_and_judged_as_far_as_the_gates_can(tmp_path: Path) -> None:
    """Japanese has no spaces: its passages are still found, its words counted by characters, and the
    readability gate says it cannot judge Japanese instead of failing the script."""
    notes = tmp_path / "notes.md"
    notes.write_text("ミツバチは踊りで餌の場所を仲間に伝えます。カール・フォン・フリッシュがこの踊りを解き明かしました。\n\n"
                     "踊りの角度は太陽の方向を示します。尻振りの長さは巣から花までの距離を示します。\n", encoding="utf-8")
    folder = tmp_path / "ep"
    folder.mkdir()
    with chat_server(obedient) as fake:
        st = settings("openai", fake.base_url + "/v1")
        st.production.min_words = 40
        script, q = produce(folder, episode(show("solo", 1, language="ja"), sources=(str(notes),)), st)
    assert "Language: Japanese (ja): write the whole script in Japanese." in fake.requests[0].json()["messages"][1]["content"]
    gates = {g["name"]: g for g in q["gates"]}
    assert gates["readability"]["passed"] and "no readability formula for Japanese" in gates["readability"]["note"]
    assert "ミツバチは踊りで" in script and q["passed"], q["reasons"]


@pytest.mark.parametrize("fmt", ["conversation", "brief"])
def test_the_local_writer_gives_a_cast_of_four_a_part_with_few_findings(fmt: Format) -> None:
    """Three findings, four speakers: the quietest takes the next turn, so nobody only says hello."""
    from podspool.stages.base import Finding, ResearchOutput

    research = ResearchOutput(provider="local", citations=[], searched=[], findings=[
        Finding(text=f"Tides rise and fall twice a day near coast number {i}. The Moon pulls the water toward it "
                     f"and the Earth turns beneath the bulge, so the sea comes in and goes out again, point {i}.",
                source="tides.md", score=1 / i) for i in range(1, 4)])
    s = show(fmt, 4)
    st = settings()
    st.production.min_words = 100
    script = LocalWriter().write(episode(s), research, s.names, [], StageContext(settings=st)).script
    draft = normalise(script, s, "Tides")
    report = quality.evaluate(with_sources(draft.body, research.findings), research, st, draft=draft, show=s)
    balance = next(g for g in report.gates if g.name == "balance")
    assert balance.passed, balance.reason


@pytest.mark.parametrize("names,reply", [
    (["अनु", "राज"], "अनु: नमस्ते, आज हम मधुमक्खियों की बात करेंगे [1].\nराज: हाँ, ठीक है।"),
    (["สมชาย", "มาลี"], "**สมชาย:** สวัสดีครับ [1]\n\n**มาลี:** สวัสดีค่ะ"),
])
def test_names_with_combining_marks_are_understood(names: list[str], reply: str) -> None:
    """Devanagari and Thai names carry combining marks, which Python's \\w does not match."""
    draft = normalise(reply, names, "T")
    assert not draft.problems and [t.host for t in parse_turns(draft.body)] == names


@pytest.mark.parametrize("tag,line", [("hi", "मधुमक्खियाँ नाचकर बताती हैं कि भोजन कहाँ है, यह बात सच है।"),
                                      ("ja", "ミツバチは踊りで餌の場所を仲間に伝えます。"),
                                      ("de", "Die Bienen tanzen, um den anderen den Weg zum Futter zu zeigen.")])
def test_a_line_said_twice_is_found_in_any_language(tag: str, line: str) -> None:
    from podspool.stages.base import Turn

    turns = [Turn("Ana", line), Turn("Bo", "—"), Turn("Ana", line.rstrip("。.।") + "!")]
    assert not quality.repetition_gate(turns, tag).passed
    assert quality.repetition_gate(turns[:2], tag).passed
