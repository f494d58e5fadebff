"""PII detection and redaction (docs/classifiers.md).

One combined regular expression finds every candidate in a single pass; each candidate is then
validated in Python (Luhn, mod-97, octet ranges, SSN ranges, phone digit counts), because a shape
alone matches too many order ids, dates and versions. Every pattern uses only bounded or
possessive repetitions with disjoint neighbours, so matching stays linear in the text size.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass

import re2

from dsl.classifiers._checksums import (
    card_brand_accepts,
    iban_expected_length,
    luhn_valid,
    mod97_valid,
)

PII_KINDS: tuple[str, ...] = (
    "email",
    "phone",
    "credit_card",
    "ssn",
    "iban",
    "ip_address",
    "secret",
)


@dataclass(frozen=True, slots=True)
class PiiFinding:
    """One PII span in the text: ``text[start:end]`` is the value, ``kind`` one of PII_KINDS."""

    kind: str
    start: int
    end: int


class UnknownPiiKindError(ValueError):
    """The caller asked for a PII kind that does not exist; use one of ``PII_KINDS``."""


# Every shape has two patterns. The gate (RE2 syntax, no look-around) over-approximates the shape
# and includes the boundary character before it; all gates run together in one RE2 set, a single
# linear DFA pass that says which shapes occur at all. Only then does the exact Python pattern
# (look-arounds, possessive repeats) run, anchored at each gate hit, followed by the validator.
# Python's own scanner costs ~25 us per pattern on 4 KB, so it must not scan the whole text.
@dataclass(frozen=True, slots=True)
class _Shape:
    name: str
    kind: str
    gate: str
    exact: str


_SHAPES: tuple[_Shape, ...] = (
    _Shape(
        "private_key",
        "secret",
        r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY-----",
        r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY-----",
    ),
    _Shape(
        "token",
        "secret",
        r"sk-[A-Za-z0-9_-]{20}|[sr]k_(?:live|test)_[A-Za-z0-9]{16}|gh[pousr]_[A-Za-z0-9]{36}"
        r"|github_pat_[A-Za-z0-9_]{22}|xox[abeoprs]-[A-Za-z0-9-]{10}|AIza[0-9A-Za-z_-]{35}"
        r"|A[KS]IA[A-Z0-9]{16}|eyJ[A-Za-z0-9_-]{4,}\.eyJ",
        r"(?<![A-Za-z0-9_-])(?:"
        r"sk-[A-Za-z0-9_-]{20,400}+"
        r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,200}+"
        r"|gh[pousr]_[A-Za-z0-9]{36,251}+"
        r"|github_pat_[A-Za-z0-9_]{22,251}+"
        r"|xox[abeoprs]-[A-Za-z0-9-]{10,250}+"
        r"|AIza[0-9A-Za-z_-]{35}"
        r"|A[KS]IA[A-Z0-9]{16}"
        r"|eyJ[A-Za-z0-9_-]{4,2000}+\.eyJ[A-Za-z0-9_-]{4,8000}+\.[A-Za-z0-9_-]{0,2000}+"
        r")(?![A-Za-z0-9_-])",
    ),
    _Shape(
        "email",
        "email",
        r"@[A-Za-z0-9][A-Za-z0-9.-]*\.[A-Za-z]{2}",
        # Only the domain: the local part is found backwards from the "@" (see _resolve_email).
        r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}+(?![\w-])",
    ),
    _Shape(
        "iban",
        "iban",
        r"(?:^|[^A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11}",
        r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,40}+",
    ),
    _Shape(
        "card",
        "credit_card",
        r"(?:^|[^0-9A-Za-z_.+-])[0-9](?:[ -]?[0-9]){12}",
        r"(?<![\w.+-])[0-9](?:[ -]?[0-9]){12,18}(?![\w]|[.,][0-9]|[ -][0-9])",
    ),
    _Shape(
        "ssn",
        "ssn",
        r"(?:^|[^0-9A-Za-z_-])[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}",
        r"(?<![\w-])[0-9]{3}(?P<sep>[- ])[0-9]{2}(?P=sep)[0-9]{4}(?![\w-]|\.[0-9])",
    ),
    _Shape(
        "ipv4",
        "ip_address",
        r"(?:^|[^0-9A-Za-z_.])[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}",
        r"(?<![\w.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![\w]|\.[0-9])",
    ),
    _Shape(
        "ipv6",
        "ip_address",
        r"(?:^|[^0-9A-Za-z_:.])[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:",
        r"(?<![\w:.])[0-9A-Fa-f:.]{2,45}+(?!\w)",
    ),
    _Shape(
        "phone_intl",
        "phone",
        r"(?:^|[^0-9A-Za-z_+])(?:\+|00)[1-9][0-9]{0,2}[ .-]?\(?[0-9]",
        r"(?<![\w+])(?:\+|00)[1-9][0-9]{0,2}+"
        r"(?:[ .-]?\([0-9]{1,4}+\)|[ .-]?[0-9]{1,4}+){2,7}+(?![\w]|[.-][0-9])",
    ),
    _Shape(
        "phone_nanp",
        "phone",
        r"(?:^|[^0-9A-Za-z_.+-])(?:1[ .-])?\(?[2-9][0-9]{2}\)?[ .-]?[2-9][0-9]{2}[ .-][0-9]{4}",
        r"(?<![\w.+-])(?:1[ .-])?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .-])"
        r"[2-9][0-9]{2}[ .-][0-9]{4}(?![\w]|[.-][0-9])",
    ),
    _Shape(
        "phone_national",
        "phone",
        r"(?:^|[^0-9A-Za-z_.+-])0[1-9][0-9]{0,3}[ .-][0-9]{2}",
        r"(?<![\w.+-])0[1-9][0-9]{0,3}+(?:[ .-][0-9]{2,8}+){1,4}+(?![\w]|[.-][0-9])",
    ),
)
# When two findings overlap, the kind earlier here wins (a key is never cut up as a phone).
_PRIORITY: tuple[str, ...] = (
    "secret",
    "email",
    "iban",
    "credit_card",
    "ssn",
    "ip_address",
    "phone",
)


def _compile_gate_set() -> re2.Set:
    gates = re2.Set.SearchSet()
    for shape in _SHAPES:
        gates.Add(shape.gate)
    gates.Compile()
    return gates


_GATES = _compile_gate_set()
_GATE_SEARCH = {shape.name: re2.compile(shape.gate) for shape in _SHAPES}
_EXACT = {shape.name: re.compile(shape.exact) for shape in _SHAPES}
_EMAIL_LOCAL_PART = re.compile(r"[\w.+%-]{1,64}\Z")
_PRIVATE_KEY_END = re.compile(r"-----END[A-Z0-9 ]{0,40}PRIVATE KEY-----")
# Lines that may follow a BEGIN line when the END line is missing (a truncated paste).
_PEM_BODY_LINE = re.compile(
    r"(?:\r?\n[ \t]*+(?:[A-Za-z0-9+/=]{1,100}+|[A-Za-z-]{1,40}+:[^\n]{0,200}+)(?=\r?\n|\Z))+"
)
_PRIVATE_KEY_MAX_CHARS = 16_000


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def _private_key_end(text: str, start: int, header_end: int) -> int:
    end_match = _PRIVATE_KEY_END.search(text, header_end, start + _PRIVATE_KEY_MAX_CHARS)
    if end_match is not None:
        return end_match.end()
    body = _PEM_BODY_LINE.match(text, header_end)
    return body.end() if body is not None else header_end


def _validate_token(value: str) -> bool:
    # Real keys are random; a body without any digit is a placeholder such as sk-xxxx...
    if value.startswith("eyJ"):
        return True
    return any(ch.isdigit() for ch in value)


def _validate_card(value: str) -> bool:
    digits = _digits(value)
    if not 13 <= len(digits) <= 19 or not luhn_valid(digits):
        return False
    separators = {ch for ch in value if not ch.isdigit()}
    if len(separators) > 1:
        return False
    if separators:
        groups = tuple(len(group) for group in re.split(r"[ -]", value))
        if not _card_grouping_ok(groups):
            return False
    return card_brand_accepts(digits)


def _card_grouping_ok(groups: tuple[int, ...]) -> bool:
    if groups in ((4, 6, 5), (4, 6, 4)):  # American Express, Diners Club
        return True
    return all(size == 4 for size in groups[:-1]) and 1 <= groups[-1] <= 4 + 3


def _validate_ssn(value: str) -> bool:
    area, group, serial = value[0:3], value[4:6], value[7:11]
    if area in ("000", "666") or area.startswith("9"):
        return False
    return group != "00" and serial != "0000"


def _validate_phone_intl(value: str) -> bool:
    digits = _digits(value)
    if value.startswith("00"):
        digits = digits[2:]
    return 8 <= len(digits) <= 15 and _separators_ok(value)


def _validate_phone_nanp(value: str) -> bool:
    return _separators_ok(value)


def _validate_phone_national(value: str) -> bool:
    separators = {ch for ch in value if not ch.isdigit()}
    # A single consistent separator: "01.02.2024 12" (date and time) is not a phone number.
    return len(separators) == 1 and 9 <= len(_digits(value)) <= 12


def _separators_ok(value: str) -> bool:
    # "1-2.3 4" style mixtures are tables of numbers, not phone numbers; one kind plus
    # parentheses around an area code is what people write.
    return len({ch for ch in value if ch in " .-"}) <= 1 or "(" in value


def _validate_ipv4(value: str) -> bool:
    octets = value.split(".")
    return all(
        int(octet) <= 255 and (octet == "0" or not octet.startswith("0")) for octet in octets
    )


def _ipv6_candidate(value: str) -> str:
    value = value.rstrip(".")
    return value if value.endswith("::") else value.rstrip(":")


def _validate_ipv6(value: str) -> bool:
    if value.count(":") < 2 or "." in value.rpartition(":")[0]:
        return False
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


_VALIDATORS: dict[str, Callable[[str], bool]] = {
    "token": _validate_token,
    "ssn": _validate_ssn,
    "card": _validate_card,
    "phone_intl": _validate_phone_intl,
    "phone_nanp": _validate_phone_nanp,
    "phone_national": _validate_phone_national,
    "ipv4": _validate_ipv4,
}


def _resolve(text: str, shape: str, start: int, end: int) -> tuple[int, int] | None:
    """The validated span of an exact-pattern match, or None when it is a look-alike."""
    if shape == "private_key":
        return start, _private_key_end(text, start, end)
    if shape == "email":
        return _resolve_email(text, start, end)
    if shape == "iban":
        return _resolve_iban(text, start, end)
    if shape == "ipv6":
        value = _ipv6_candidate(text[start:end])
        return (start, start + len(value)) if _validate_ipv6(value) else None
    if shape == "token" and start > 0 and text[start - 1] == "-":
        return None
    return (start, end) if _VALIDATORS[shape](text[start:end]) else None


def _resolve_email(text: str, at: int, end: int) -> tuple[int, int] | None:
    local = _EMAIL_LOCAL_PART.search(text, max(0, at - 64), at)
    if local is None:
        return None
    start = local.start()
    if start > 0 and _EMAIL_LOCAL_PART.match(text[start - 1]):
        return None  # a local part longer than 64 characters is not an address
    while start < at and text[start] == ".":
        start += 1
    return (start, end) if start < at else None


def _resolve_iban(text: str, start: int, end: int) -> tuple[int, int] | None:
    expected = iban_expected_length(text[start : start + 2])
    if expected is None:
        return None
    seen = 0
    position = start
    # The candidate is greedy (it may run into the next upper-case word): cut it at the length
    # the country prescribes, then check the cut does not fall inside a word.
    while position < end and seen < expected:
        if text[position] != " ":
            seen += 1
        position += 1
    if seen != expected or (position < len(text) and text[position].isalnum()):
        return None
    compact = text[start:position].replace(" ", "")
    return (start, position) if mod97_valid(compact) else None


def _candidates(text: str, subject: str | bytes, shape: str) -> list[tuple[int, int]]:
    exact = _EXACT[shape]
    spans: list[tuple[int, int]] = []
    for gate_hit in _GATE_SEARCH[shape].finditer(subject):
        # A gate hit starts at the shape or at the one boundary character before it.
        hit_start = gate_hit.start()
        for position in (hit_start, hit_start + 1):
            match = exact.match(text, position)
            if match is None:
                continue
            span = _resolve(text, shape, match.start(), match.end())
            if span is not None:
                spans.append(span)
                break
    return spans


def _check_kinds(kinds: Collection[str] | None) -> frozenset[str]:
    if kinds is None:
        return frozenset(PII_KINDS)
    wanted = frozenset(kinds)
    unknown = wanted.difference(PII_KINDS)
    if unknown:
        raise UnknownPiiKindError(
            f"unknown PII kind(s) {sorted(unknown)}; expected some of {list(PII_KINDS)}"
        )
    return wanted


def find_pii(text: str, kinds: Collection[str] | None = None) -> list[PiiFinding]:
    """Every PII span of the wanted kinds (all by default), sorted and non-overlapping."""
    wanted = _check_kinds(kinds)
    present = _GATES.Match(text)
    if not present:
        return []
    # RE2 reports byte offsets and its wrapper converts them to characters at O(n) per match;
    # for ASCII text both are the same, so the bytes are searched directly.
    subject: str | bytes = text.encode("ascii") if text.isascii() else text
    by_kind: dict[str, list[tuple[int, int]]] = {}
    for index in present:
        shape = _SHAPES[index]
        by_kind.setdefault(shape.kind, []).extend(_candidates(text, subject, shape.name))
    # Resolve overlaps for every kind, wanted or not: asking only for phones must not turn the
    # digits of a card number into a phone finding.
    taken: list[PiiFinding] = []
    for kind in _PRIORITY:
        for start, end in sorted(by_kind.get(kind, ())):
            if not any(start < other.end and other.start < end for other in taken):
                taken.append(PiiFinding(kind, start, end))
    return sorted((finding for finding in taken if finding.kind in wanted), key=lambda f: f.start)


def redaction_marker(kind: str) -> str:
    return f"[REDACTED:{kind.upper()}]"


def redact_pii(text: str, kinds: Collection[str] | None = None) -> tuple[str, dict[str, int]]:
    """Replace each PII span with ``[REDACTED:<KIND>]``; return the text and counts per kind.

    Markers contain no PII shape, so redacting twice changes nothing the second time.
    """
    counts: dict[str, int] = {}
    # A marker ends in "]" where the value ended in a letter or digit, so a shape that the value
    # used to shield ("a@b.io+44 20 7946 0958") can appear; redact until nothing is left.
    while findings := find_pii(text, kinds):
        pieces: list[str] = []
        cursor = 0
        for finding in findings:
            pieces.append(text[cursor : finding.start])
            pieces.append(redaction_marker(finding.kind))
            counts[finding.kind] = counts.get(finding.kind, 0) + 1
            cursor = finding.end
        pieces.append(text[cursor:])
        text = "".join(pieces)
    return text, counts
