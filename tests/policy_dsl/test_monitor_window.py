"""The held-back window's fast path (plain ASCII) agrees with the general walk."""

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from dsl.monitor import _hold_start


def slow_hold_start(pending: str, window: int) -> int:
    if window <= 0:
        return len(pending)
    units, index = 0, len(pending)
    while index > 0 and units < window:
        index -= 1
        ch = pending[index]
        if ch.isspace():
            while index > 0 and pending[index - 1].isspace():
                index -= 1
            units += 1
        elif not unicodedata.combining(ch):
            units += 1
    return index


texts = st.text(alphabet=st.sampled_from("ab  \n\t.é\u0301x"), max_size=80)


@given(texts, st.integers(min_value=0, max_value=40))
def test_fast_path_matches_the_walk(pending, window):
    assert _hold_start(pending, window) == slow_hold_start(pending, window)


@given(st.text(alphabet="abc d", max_size=200), st.integers(min_value=1, max_value=60))
def test_ascii_text_matches_the_walk(pending, window):
    assert _hold_start(pending, window) == slow_hold_start(pending, window)
