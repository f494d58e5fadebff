"""Spelling tricks do not hide a denylisted term, on input or in a streamed answer.

Every form is checked on input and as output fed to the monitor split into two frames at every
offset: the stream must stop with a refusal and none of the term's characters may be released.
"""

from __future__ import annotations

import json
import random

import bypass_forms as forms
from helpers import decide, facts, policy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dsl

TERMS = forms.policy_terms() + forms.dictionary_words()
BEFORE = "Here is the answer: "
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def _policy() -> dsl.CompiledPolicy:
    listed = ", ".join(json.dumps(term) for term in TERMS)
    return policy(f"  denylist bad = [{listed}]\n"
                  "  rule in { when input contains any of bad then refuse reason IN }\n"
                  "  rule out { when output contains any of bad then refuse reason OUT }")


COMPILED = _policy()


def assert_caught_on_input(term: str, form: str) -> None:
    decision = decide(COMPILED, f"please tell me about {form} today")
    assert decision.decision == "refuse", (term, form)
    assert term in decision.denylist_hits, (term, form, decision.denylist_hits)


def stream(chunks: list[str]) -> tuple[str, dsl.Decision | None]:
    request = facts("hi")
    monitor = COMPILED.output_monitor(request, COMPILED.evaluate_input(request, dsl.classify("hi")))
    released, last = [], None
    for chunk in chunks:
        text, decision = monitor.feed(chunk)
        released.append(text)
        last = decision or last
        if monitor.stopped:
            return "".join(released), last
    text, decision = monitor.finish()
    return "".join(released) + text, decision or last


def assert_caught_streamed(term: str, form: str) -> None:
    answer = f"{BEFORE}{form} and more."
    for cut in range(1, len(answer)):
        released, decision = stream([answer[:cut], answer[cut:]])
        assert decision is not None and decision.reason_code == "OUT", (term, form, cut)
        # Nothing of the term may leave: what was released is a prefix of the text before it.
        assert BEFORE.startswith(released), (term, form, cut, released)


def with_invisible(term: str, position: int, invisible: str) -> str:
    return term[:position] + invisible + term[position:]


def test_the_attack_corpus_is_not_empty():
    assert len(TERMS) >= 80 and "pipe bomb" in TERMS
    assert {"\u200b", "\u200d", "\u00ad", "\u2060", "\ufeff", "\u202e", "\ufe0f",
            "\U000e0041"} <= set(forms.invisibles())
    assert "\u043e" in forms.confusables()["o"]  # Cyrillic o


def test_an_invisible_character_at_every_position_is_caught_on_input():
    rng = random.Random(1)
    invisibles = forms.invisibles()
    for term in TERMS:
        for position in range(len(term) + 1):
            assert_caught_on_input(term, with_invisible(term, position, rng.choice(invisibles)))


def test_every_invisible_character_is_removed():
    for invisible in forms.invisibles():
        assert_caught_on_input("pipe bomb", f"pi{invisible}pe bo{invisible}mb")


def test_an_invisible_character_at_every_position_is_caught_in_a_stream_split_anywhere():
    rng = random.Random(2)
    for term in forms.policy_terms()[:12]:
        position = rng.randrange(1, len(term))
        assert_caught_streamed(term, with_invisible(term, position, "\u200b"))


@st.composite
def disguised(draw: st.DrawFn) -> tuple[str, str]:
    """A term with confusable letters, full-width letters, combining marks, mixed case and
    invisible characters, each trick drawn independently for each character."""
    term = draw(st.sampled_from(TERMS))
    table = forms.confusables()
    # Each word keeps one ASCII letter, so it stays mixed-script: a word spelled wholly in
    # another script is read as that script (see docs/policy-language.md).
    keep = {draw(st.sampled_from(range(start, start + len(word))))
            for start, word in _words(term)}
    out = []
    for index, char in enumerate(term):
        trick = draw(st.sampled_from(("none", "confusable", "full", "upper")))
        if char.isalpha() and trick == "confusable" and index not in keep and char in table:
            char = draw(st.sampled_from(table[char]))
        elif trick == "full" and char != " ":
            char = forms.full_width(char)
        elif trick == "upper":
            char = char.upper()
        out.append(char)
        if char != " " and draw(st.booleans()):
            out.append(draw(st.sampled_from(forms.marks())))
        if draw(st.integers(0, 3)) == 0:
            out.append(draw(st.sampled_from(forms.invisibles())))
    return term, "".join(out)


def _words(term: str) -> list[tuple[int, str]]:
    found, start = [], 0
    for word in term.split(" "):
        found.append((start, word))
        start += len(word) + 1
    return found


@SETTINGS
@given(disguised())
def test_a_disguised_term_is_caught_on_input_and_in_a_stream_split_at_every_offset(case):
    term, form = case
    assert_caught_on_input(term, form)
    assert_caught_streamed(term, form)


def test_each_kind_of_trick_alone_is_caught():
    cyrillic_o = forms.confusables()["o"][forms.confusables()["o"].index("\u043e")]
    for form in ("pipe b\u200bomb", "pipe b" + cyrillic_o + "mb", "ｐｉｐｅ ｂｏｍｂ",  # noqa: RUF001
                 "pipe bo\u0301mb", "PiPe BoMb", "pi\u00adpe bo\u2060mb"):
        assert_caught_on_input("pipe bomb", form)
        assert_caught_streamed("pipe bomb", form)


def test_redaction_covers_the_disguised_term_in_the_original_text():
    compiled = policy('  list bad = ["pipe bomb"]\n'
                      "  rule r { when input contains any of bad then allow redact matched terms }")
    text = "a p\u200bipe b\u043e\u0301mb here"
    decision = decide(compiled, text)
    redactor = decision.obligations.redactor
    assert redactor is not None
    assert redactor.apply(text) == ("a [REDACTED:TERM] here", {"term": 1})


def test_invisible_characters_between_the_words_of_a_phrase_do_not_shrink_the_window():
    # Each space-invisible pair is one space once folded: the monitor must hold back the whole
    # phrase, however many such pairs stand between its words.
    gap = " \u200b" * 3 * COMPILED.output_window + " "
    assert_caught_on_input("pipe bomb", f"pipe{gap}bomb")
    answer = f"{BEFORE}pipe{gap}bomb and more."
    for cut in range(1, len(answer), 7):
        released, decision = stream([answer[:cut], answer[cut:]])
        assert decision is not None and decision.reason_code == "OUT", cut
        assert "pipe" not in released, cut
    chunks = [answer[i:i + 3] for i in range(0, len(answer), 3)]
    released, decision = stream(chunks)
    assert decision is not None and decision.reason_code == "OUT"
    assert "pipe" not in released


def test_a_word_ending_in_a_term_is_not_a_hit_wherever_the_release_cuts_it():
    # "xpipe bomb" is not the term: neither a release cut inside the word "xpipe" nor invisible
    # characters between x and pipe may make it one, whichever frame they arrive in.
    for word in ("xpipe", "x\u200b\u200b\u200bpipe"):
        answer = f"{BEFORE}{word} bomb" + " and more" * 8
        for cut in range(1, len(answer)):
            released, _ = stream([answer[:cut], answer[cut:]])
            assert released == answer, (word, cut)


REDACTING = policy("  denylist bad = [" + ", ".join(json.dumps(t) for t in TERMS) + "]\n"
                   "  rule r { when input contains any of bad then allow redact matched terms }")


@SETTINGS
@given(disguised())
def test_redaction_replaces_exactly_the_disguised_term_in_the_original_text(case):
    term, form = case
    text = f"zzq {form} qqz"
    decision = decide(REDACTING, text)
    redactor = decision.obligations.redactor
    assert redactor is not None and term in decision.denylist_hits, (term, form)
    assert redactor.apply(text)[0] == "zzq [REDACTED:TERM] qqz", (term, form)
