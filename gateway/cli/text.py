"""Printing stored text on an operator's terminal.

Labels, policy users and targets come from callers. Printed raw, a C0/C1 control sequence could
rewrite the terminal, a bidi override reorder what is shown, and U+2028 forge a line. The
gateway refuses such labels on the way in (gateway/policy/governance.py); this escapes them on
the way out too, for rows stored before that check or written by other tools.
"""

from __future__ import annotations

import unicodedata

from gateway.labels import BIDI_AND_SEPARATORS


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with control, bidi and separator characters written as escapes (`\\x1b`,
    `\\u202e`); `keep_newlines` keeps line feeds and tabs of multi-line text (a policy source)."""
    out = []
    for ch in text:
        if keep_newlines and ch in "\n\t":
            out.append(ch)
        elif unicodedata.category(ch) == "Cc" or ch in BIDI_AND_SEPARATORS:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
