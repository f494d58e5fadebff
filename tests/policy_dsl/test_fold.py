"""The fold itself: one result whichever path computes it, offsets into the original text, and
no cross-script matches on text written in one script."""

from __future__ import annotations

from helpers import decide, facts, policy
from hypothesis import given, settings
from hypothesis import strategies as st

import dsl
from dsl.fold import fold, fold_with_origins, folds_to_nothing, term_keys

CYRILLIC_COP = "\u0441\u043e\u0440"  # a real Russian word drawn like the Latin "cop"
CYRILLIC_BOMB = "\u0431\u043e\u043c\u0431\u0430"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_fold_and_fold_with_origins_agree_and_origins_point_into_the_text(text):
    folded, origins = fold_with_origins(text)
    assert folded == fold(text)
    assert len(origins) == len(folded)
    assert origins == sorted(origins)
    assert all(0 <= index < len(text) for index in origins)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="ascii"), max_size=80))
def test_ascii_fast_path_equals_the_general_path(text):
    assert fold(text) == fold(text + "\u200b").strip()


def test_a_word_in_one_other_script_keeps_its_letters():
    assert fold(CYRILLIC_COP) == CYRILLIC_COP
    compiled = policy('  list bad = ["cop"]\n  rule r { when input contains any of bad then refuse }')
    assert decide(compiled, f"\u0432\u0435\u0441\u044c {CYRILLIC_COP}").decision == "allow"
    # ...but one look-alike slipped into a Latin word is read as Latin.
    assert decide(compiled, "a c\u043ep").decision == "refuse"


def test_a_non_latin_term_is_found_with_a_latin_look_alike_slipped_in():
    assert len(term_keys(CYRILLIC_BOMB)) == 2
    compiled = policy(f'  list bad = ["{CYRILLIC_BOMB}"]\n'
                      "  rule r { when input contains any of bad then refuse }")
    assert decide(compiled, CYRILLIC_BOMB).decision == "refuse"
    mixed = CYRILLIC_BOMB.replace("\u043e", "o").replace("\u0430", "a")
    assert decide(compiled, f"\u044d\u0442\u043e {mixed}").decision == "refuse"


def test_ascii_letters_are_never_skeleton_mapped():
    assert fold("burn modern com 0 1 I") == "burn modern com 0 1 i"
    compiled = policy('  list bad = ["burn"]\n  rule r { when input contains any of bad then refuse }')
    assert decide(compiled, "you bum").decision == "allow"


def test_invisible_characters_and_marks_fold_to_nothing():
    assert folds_to_nothing("\u200b") and folds_to_nothing("\u0301")
    assert not folds_to_nothing("a") and not folds_to_nothing("\u00df")
    assert fold("Stra\u00dfe \ufb01re") == "strasse fire"


def test_an_invisible_character_does_not_split_a_pattern_match():
    compiled = policy("  rule r { when input matches /build\\s+a\\s+bomb/ then refuse }\n"
                      "  rule o { when output matches /nightjar/ then refuse reason OUT }")
    assert decide(compiled, "build a bo\u200bmb").decision == "refuse"
    assert decide(compiled, "build a b\U000e0041o\u00admb").decision == "refuse"  # tag, BMP
    assert decide(compiled, "build a b\u00f3mb").decision == "allow"  # accents are the pattern's
    request = facts("hi")
    start = compiled.evaluate_input(request, dsl.classify("hi"))
    assert compiled.evaluate_output(request, "night\u2060jar", start).reason_code == "OUT"
    monitor = compiled.output_monitor(request, start)
    released, _ = monitor.feed("the night\u200b")
    released2, decision2 = monitor.feed("jar flies")
    assert monitor.stopped and decision2 is not None and decision2.reason_code == "OUT"
    assert "night" not in released + released2


def test_every_icu_confusable_of_an_ascii_letter_folds_to_it():
    """Straight from ICU's skeleton, independent of the bypass generator. Two documented
    readings win over the look: a capital is read by its lower case (a Cyrillic capital I is `i`, as
    ASCII `I` is), and a compatibility character by its compatibility form (long s is `s`)."""
    import string

    import icu

    spoof, nfkc = icu.SpoofChecker(), icu.Normalizer2.getNFKCInstance()
    letters = {spoof.getSkeleton(0, letter): letter for letter in string.ascii_lowercase}
    missed, checked = [], 0
    for code in range(0x80, 0x20000):
        char = chr(code)
        letter = letters.get(spoof.getSkeleton(0, char))
        if letter is None:
            continue
        checked += 1
        if char != char.lower() or nfkc.normalize(char) != char:
            continue
        if fold(f"{letter}{char}{letter}", force_skeleton=True) != letter * 3:
            missed.append(char)
    assert checked > 600
    assert missed == []
