"""The held-back window's fast path (plain ASCII) agrees with the general walk, and the walk
holds back at least the window in folded characters."""

from hypothesis import given
from hypothesis import strategies as st

from dsl.fold import fold, folds_to_nothing
from dsl.holdback import fixed_window_start as _hold_start


def slow_hold_start(pending: str, window: int) -> int:
    if window <= 0:
        return len(pending)
    units, index = 0, len(pending)
    while index > 0 and units < window:
        index -= 1
        ch = pending[index]
        if ch.isspace() or folds_to_nothing(ch):
            spaced = ch.isspace()
            while index > 0 and (pending[index - 1].isspace()
                                 or folds_to_nothing(pending[index - 1])):
                index -= 1
                spaced = spaced or pending[index].isspace()
            units += spaced
        else:
            units += 1
    return index


texts = st.text(alphabet=st.sampled_from("ab  \n\t.é\u0301x\u200b\u00ad\u00df"), max_size=80)


@given(texts, st.integers(min_value=0, max_value=40))
def test_fast_path_matches_the_walk(pending, window):
    assert _hold_start(pending, window) == slow_hold_start(pending, window)


@given(st.text(alphabet="abc d", max_size=200), st.integers(min_value=1, max_value=60))
def test_ascii_text_matches_the_walk(pending, window):
    assert _hold_start(pending, window) == slow_hold_start(pending, window)


@given(texts, st.integers(min_value=1, max_value=40))
def test_the_held_text_folds_to_at_least_the_window(pending, window):
    held = pending[_hold_start(pending, window):]
    # Between two letters, so that fold keeps the spaces at the ends of the held text.
    def units(text: str) -> int:
        return len(fold(f"x{text}x")) - 2
    assert units(held) >= min(window, units(pending))
