"""The normaliser: what models really write becomes `**Host:** text` under `## ` headings, or is named.

Expected outputs are written out by hand here, so a change in the normaliser's behaviour shows up as a
failing line rather than a silently different script.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from podspool.stages.script.format import parse_turns, sections
from podspool.stages.script.normalise import normalise

HOSTS = ["Alex", "Sam"]


def turns(reply: str, hosts: list[str] = HOSTS) -> list[tuple[str, str]]:
    draft = normalise(reply, hosts, "Bees")
    assert not draft.problems, draft.problems
    return [(t.host, t.text) for t in parse_turns(draft.body)]


@pytest.mark.parametrize("reply", [
    "Alex: Bees dance [1].\nSam: They do.",
    "**Alex:** Bees dance [1].\n\n**Sam:** They do.",
    "**Alex**: Bees dance [1].\n\n**Sam**: They do.",
    "ALEX: Bees dance [1].\nSAM: They do.",
    "ALEX (smiling): Bees dance [1].\nSAM (laughing): They do.",
    "- **Alex:** Bees dance [1].\n- **Sam:** They do.",
    "* Alex: Bees dance [1].\n* Sam: They do.",
    "1. **Alex**: Bees dance [1].\n2. **Sam**: They do.",
    "*Alex:* Bees dance [1].\n*Sam:* They do.",
    "**ALEX**\nBees dance [1].\n\n**SAM**\nThey do.",
    "```markdown\nAlex: Bees dance [1].\nSam: They do.\n```",
    "Alex — Bees dance [1].\n**Sam** - They do.",
])
def test_name_variants(reply: str) -> None:
    assert turns(reply) == [("Alex", "Bees dance."), ("Sam", "They do.")]


@pytest.mark.parametrize("a,b", [("Host A", "Host B"), ("HOST 1", "HOST 2"), ("Speaker 1", "Speaker 2"),
                                 ("Person1", "Person2"), ("**Host A**", "**Host B**"), ("Host", "Guest")])
def test_generic_labels_map_to_hosts_in_order_of_first_appearance(a: str, b: str) -> None:
    reply = f"{b}: I start [1].\n{a}: I answer.\n{b}: And again."
    assert turns(reply) == [("Alex", "I start."), ("Sam", "I answer."), ("Alex", "And again.")]


def test_tagged_turns_across_lines() -> None:
    reply = "<Person1>Welcome to\nthe show [1].</Person1><Person2>Thanks!</Person2>\n<Person1>Bye.</Person1>"
    assert turns(reply) == [("Alex", "Welcome to the show."), ("Sam", "Thanks!"), ("Alex", "Bye.")]


def test_a_named_host_and_a_generic_label_share_the_hosts() -> None:
    assert turns("Sam: Hi [1].\nHost A: Hello.") == [("Sam", "Hi."), ("Alex", "Hello.")]


def test_stage_directions_and_reasoning_are_dropped_placeholders_are_kept() -> None:
    reply = ("<think>I should write **Alex:** lines.</think>\n[Intro music]\n"
             "Alex: [laughs] Bees dance (pause) a lot [1]. *sighs*\n(Sam nods)\n"
             "Sam: *softly* They do (about 27% of them) [insert fact here].")
    draft = normalise(reply, HOSTS, "Bees")
    assert [(t.host, t.text) for t in parse_turns(draft.body)] == [
        ("Alex", "Bees dance a lot."), ("Sam", "They do (about 27% of them) [insert fact here].")]
    assert "<think> reasoning" in draft.dropped and "[Intro music]" in draft.dropped
    assert "think" not in draft.body


def test_unclosed_or_half_eaten_reasoning() -> None:
    assert turns("planning the script...</think>\nAlex: Real [1].\nSam: Yes.")[0] == ("Alex", "Real.")
    assert normalise("Alex: Hi [1].\nSam: Yes.\n<think>and now I will", HOSTS, "B").body.count("**") == 4


def test_structure_title_sections_and_the_models_own_sources() -> None:
    reply = ("Sure! Here's the script you asked for.\n\n# The Dance\n\n**Segment 1: Direction**\n"
             "Alex: One [1].\nSam: Two\nstill Sam.\n\nAnd more from Sam.\n\n### Outro\nAlex: Bye.\n\n"
             "**Sources:**\n1. Something the model made up\n\nHope this helps!")
    draft = normalise(reply, HOSTS, "Bees")
    assert draft.body == ("# The Dance\n\n## Segment 1: Direction\n\n**Alex:** One [1].\n\n"
                          "**Sam:** Two still Sam.\n\n**Sam:** And more from Sam.\n\n## Outro\n\n**Alex:** Bye.\n")
    assert not draft.title_supplied and any("Hope this helps" in d for d in draft.dropped)
    assert any("before the first turn" in d for d in draft.dropped)


def test_missing_title_comes_from_the_topic_and_turns_get_a_heading() -> None:
    draft = normalise("Alex: Hi [1].\nSam: Yo.", HOSTS, "Why we sleep")
    assert draft.title_supplied and draft.body.startswith("# Why we sleep\n\n## Conversation\n\n**Alex:** Hi")
    assert [s.heading for s in sections(draft.body)] == ["", "Conversation"]
    assert normalise("Title: Night\nAlex: Hi.\nSam: Yo.", HOSTS, "x").body.startswith("# Night\n")


@pytest.mark.parametrize("line,who", [
    ("**Narrator:** Meanwhile, in 1973...", "a speaker 'Narrator' beyond the cast"),
    ("GUEST STAR: Hello!", "unknown speaker 'GUEST STAR'"),
    ("Dr. Smith: I study bees.\nDr. Smith: Really.", "unknown speaker 'Dr. Smith'"),
    ("Speaker 3: A third voice.", "a speaker 'Speaker 3' beyond the cast"),
])
def test_what_cannot_be_understood_is_named_with_its_line(line: str, who: str) -> None:
    draft = normalise(f"Speaker 1: Hi [1].\nSpeaker 2: Hello.\n{line}\nSpeaker 1: Bye.", HOSTS, "B")
    assert len(draft.problems) == 1 and draft.problems[0].startswith(f"line 3: {who}")
    assert line.split(":")[0].strip("*") in draft.problems[0]
    assert line.split(":", 1)[1].strip()[:8] in draft.problems[0]  # the offending words are quoted


def test_prose_with_a_colon_is_not_a_speaker() -> None:
    assert turns("Alex: Look.\n\nHere's the thing: bees dance [1].\nSam: Fun fact: they do.") == [
        ("Alex", "Look."), ("Alex", "Here's the thing: bees dance."), ("Sam", "Fun fact: they do.")]


def test_normalising_is_idempotent() -> None:
    reply = "# T\n\n## Intro\n\nHOST A: Hi [1].\n\nHOST B: Yo.\n\nA stray line.\n"
    once = normalise(reply, HOSTS, "T").body
    assert normalise(once, HOSTS, "T").body == once


def test_a_chat_models_usual_dressing() -> None:
    reply = ('Here is a script for a podcast episode on "Tides":\n\n**Episode Title:** "Pulled by the Moon"\n\n'
             "**[Intro Music]**\n\n**Alex:** Welcome [Source 1]! *[sound of waves]* Let's go.\n\n"
             "**(Sam laughs)**\n\n**Sam:** Thanks [Finding 2, 3].\n\n**[Segment 1: Two Bulges]**\n\n"
             "**Alex:** The moon pulls [1].\n\n---\n\n**[Outro Music]**\n**End of Episode**\n")
    draft = normalise(reply, HOSTS, "Tides")
    assert draft.body == ("# Pulled by the Moon\n\n## Intro\n\n**Alex:** Welcome [1]! Let's go.\n\n"
                          "**Sam:** Thanks [2, 3].\n\n## Segment 1: Two Bulges\n\n**Alex:** The moon pulls [1].\n")
    assert not draft.problems and "**(Sam laughs)**" in draft.dropped


def test_hosts_with_accents_and_a_generic_label_for_the_other() -> None:
    assert turns("**JOSÉ:** Hola [1].\nHost 2: Hi.\nJosé: Bye.", ["José", "Zoë"]) == [
        ("José", "Hola."), ("Zoë", "Hi."), ("José", "Bye.")]


def test_line_numbers_are_the_replys_own() -> None:
    reply = "<think>\nplan\nmore plan\n</think>\nAlex: Hi [1].\nSam: Yo.\n**Narrator:** Boo."
    assert normalise(reply, HOSTS, "B").problems[0].startswith("line 7: a speaker 'Narrator' beyond")


def test_a_dash_is_a_label_only_for_a_host_or_a_generic_label() -> None:
    assert turns("Host A - Hi [1].\nHost B — Paris - the city of light.\n\nParis - the city.\nHost A: Bye.") == [
        ("Alex", "Hi."), ("Sam", "Paris - the city of light."), ("Sam", "Paris - the city."), ("Alex", "Bye.")]


def test_a_lone_plain_word_before_a_colon_is_prose() -> None:
    assert turns("Alex: Two things [1].\nFirstly: bees dance.\nSam: And secondly?") == [
        ("Alex", "Two things. Firstly: bees dance."), ("Sam", "And secondly?")]


_PIECES = ["Alex:", "**Sam:**", "HOST A:", "Speaker 3:", "<Person1>", "</Person1>", "<think>", "</think>", "## ",
           "# ", "[laughs]", "(pause)", "*", "**", "[1]", "[9]", "Title:", "```", "---", "- ", "\n", "\n\n",
           "Narrator:", "words here.", "Sources:", "1. x", " — ", ":", "[", "(", "é"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=12)), max_size=40))
def test_any_reply_normalises_without_error_and_stays_normalised(pieces: list[str]) -> None:
    draft = normalise("".join(pieces), HOSTS, "Topic")
    assert draft.body.startswith("# ")
    assert {t.host for t in parse_turns(draft.body)} <= set(HOSTS)
    assert normalise(draft.body, HOSTS, "Topic").body == draft.body  # normalising twice changes nothing
