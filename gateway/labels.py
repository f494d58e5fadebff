"""Text that callers and admins give the gateway to store and show back (labels, names).

Labels are stored, returned by the history API and printed on operators' terminals, where a
C0/C1 control sequence rewrites the screen, a bidi override reorders what is shown and U+2028
forges a line. Such characters are refused on the way in (and escaped on the way out by
gateway/cli/text.py).
"""

from __future__ import annotations

#: Bidi controls and the line and paragraph separators (C0 and C1 controls are checked by code).
BIDI_AND_SEPARATORS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                                "\u2066\u2067\u2068\u2069\u2028\u2029")
MAX_NAME_LENGTH = 256


def unsafe_character(value: str) -> str | None:
    """The first character of `value` that may not be stored as a label, or None."""
    for ch in value:
        code = ord(ch)
        if code < 0x20 or 0x7f <= code <= 0x9f or ch in BIDI_AND_SEPARATORS:
            return ch
    return None


def label_problem(value: str, what: str) -> str | None:
    """Why `value` cannot be stored as `what`, or None."""
    if len(value) > MAX_NAME_LENGTH:
        return f"{what} must be at most {MAX_NAME_LENGTH} characters"
    unsafe = unsafe_character(value)
    if unsafe is not None:
        return (f"{what} may not contain control, bidirectional-override or line-separator "
                f"characters (found U+{ord(unsafe):04X})")
    return None
