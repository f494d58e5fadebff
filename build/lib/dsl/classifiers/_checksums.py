"""Checksums and issuer tables that tell real card numbers and IBANs from look-alikes."""

from __future__ import annotations

# IBAN length per country (ISO 13616 registry). A candidate from a country not listed here is
# not reported: a two-letter code plus digits is too common a shape to accept without it.
_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def iban_expected_length(country: str) -> int | None:
    return _IBAN_LENGTHS.get(country)


def mod97_valid(iban: str) -> bool:
    """ISO 7064 mod 97-10 over the rearranged IBAN (letters as 10..35)."""
    rearranged = iban[4:] + iban[:4]
    remainder = 0
    for ch in rearranged:
        if ch.isdigit():
            remainder = (remainder * 10 + ord(ch) - 48) % 97
        elif "A" <= ch <= "Z":
            remainder = (remainder * 100 + ord(ch) - 55) % 97
        else:
            return False
    return remainder == 1


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, ch in enumerate(reversed(digits)):
        value = ord(ch) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


# (first prefix, last prefix, allowed lengths): prefixes are compared as integers on the same
# number of leading digits. Sources: the card networks' published IIN ranges.
_IIN_RANGES: tuple[tuple[str, str, frozenset[int]], ...] = (
    ("4", "4", frozenset({13, 16, 19})),                  # Visa
    ("51", "55", frozenset({16})),                        # Mastercard
    ("2221", "2720", frozenset({16})),                    # Mastercard 2-series
    ("34", "34", frozenset({15})),                        # American Express
    ("37", "37", frozenset({15})),
    ("6011", "6011", frozenset(range(16, 20))),           # Discover
    ("644", "649", frozenset(range(16, 20))),
    ("65", "65", frozenset(range(16, 20))),
    ("3528", "3589", frozenset(range(16, 20))),           # JCB
    ("300", "305", frozenset(range(14, 20))),             # Diners Club
    ("36", "36", frozenset(range(14, 20))),
    ("38", "39", frozenset(range(16, 20))),
    ("62", "62", frozenset(range(16, 20))),               # UnionPay
    ("2200", "2204", frozenset(range(16, 20))),           # Mir
    ("50", "50", frozenset(range(13, 20))),               # Maestro
    ("56", "58", frozenset(range(13, 20))),
    ("63", "63", frozenset(range(13, 20))),
    ("67", "67", frozenset(range(13, 20))),
)  # fmt: skip


def card_brand_accepts(digits: str) -> bool:
    """True when a known network issues numbers with this prefix and this length."""
    for first, last, lengths in _IIN_RANGES:
        prefix = digits[: len(first)]
        if first <= prefix <= last and len(digits) in lengths:
            return True
    return False
