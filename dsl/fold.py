"""Folding: the one spelling of text and terms that matching compares, so spelling tricks fail.

Per character, from ICU's Unicode data (PyICU), never from a table typed here:

- NFKC_Casefold: compatibility forms (full-width, ligatures, mathematical letters) and case
  become one, and default-ignorable code points (zero-width characters, soft hyphen, word joiner,
  BOM, bidi controls, variation selectors, tag characters, Hangul fillers) disappear;
- canonical decomposition, then combining marks (Mn, Me) dropped: an added accent hides nothing;
- in a word that is Latin or mixes scripts, the confusable skeleton of Unicode TS #39 (ICU's
  SpoofChecker): a Cyrillic o (U+043E) in a Latin word becomes a Latin `o`.

Why only Latin or mixed-script words get the skeleton: a word written wholly in one other script
(real Russian, Greek, Armenian text) keeps its own letters, so the Russian word for litter,
written with the Cyrillic look-alikes of c, o and p, never matches a term `cop`. A term is
indexed under both spellings (`term_keys`), so a Cyrillic term is still found when a Latin
look-alike letter is slipped into it. The scripts one language writes together (Han with kana
or Hangul) count as one, as in the "highly restrictive" level of TS #39.

Why ASCII is never skeleton-mapped: ASCII-to-ASCII confusables (`m` -> `rn`, `0` -> `O`,
`1` -> `l`) are visible spellings that collide with real words (`bum`/`burn`, `com`/`corn`).

Plain ASCII text takes a fast path (lower case, whitespace collapsed) that gives the same result.
"""

from __future__ import annotations

import functools
import re
import string

import icu
import re2

_NFKC_CF = icu.Normalizer2.getNFKCCasefoldInstance()
_NFD = icu.Normalizer2.getNFDInstance()
_NFKC = icu.Normalizer2.getNFKCInstance()
_SPOOF = icu.SpoofChecker()
_MARKS = frozenset({icu.UCharCategory.NON_SPACING_MARK, icu.UCharCategory.ENCLOSING_MARK})
_DEFAULT_IGNORABLE = icu.UProperty.DEFAULT_IGNORABLE_CODE_POINT
# Scripts that are no script of their own (digits, punctuation, combining marks) and the scripts
# one language writes together (Japanese, Chinese, Korean), which are not a trick when mixed.
_NO_SCRIPT = frozenset({"Zyyy", "Zinh", "Zzzz"})
_SAME_WRITING = {"Hira": "Hani", "Kana": "Hani", "Hang": "Hani", "Bopo": "Hani"}
_TOKEN = re.compile(r"\S+")


def _invisible_ranges() -> list[tuple[int, int]]:
    found = icu.UnicodeSet("[:Default_Ignorable_Code_Point:]")
    return [(ord(found.getRangeStart(i)), ord(found.getRangeEnd(i)))
            for i in range(found.getRangeCount())]


# Every default-ignorable code point as one character class, from ICU's ranges: RE2 finds
# whether a text holds any (a DFA scan, a few us for 4 KB), Python's re removes them.
_INVISIBLE_SEARCH = re2.compile(
    "[" + "".join(f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in _invisible_ranges()) + "]")
_INVISIBLE = re.compile(
    "[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in _invisible_ranges()) + "]+")
# Python's re tests a class of BMP characters with a bitmap, much faster than with ranges: the
# usual invisibles (zero-width, soft hyphen, bidi) are all in the BMP; tag characters are not.
_ASTRAL_INVISIBLE = re2.compile(
    "[" + "".join(f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in _invisible_ranges() if a > 0xFFFF)
    + "]")
_BMP_INVISIBLE = re.compile(
    "[" + "".join(f"\\u{a:04x}-\\u{b:04x}" for a, b in _invisible_ranges() if b <= 0xFFFF)
    + "]+")
# ASCII letters keep their own spelling, so a non-ASCII letter whose skeleton is an ASCII
# letter's skeleton must become that letter: a Cyrillic letter drawn as `m` (skeleton `rn`)
# becomes `m`. Computed from ICU's data at import, never typed here.
_ASCII_BY_SKELETON = {
    _NFKC_CF.normalize(_SPOOF.getSkeleton(0, letter)): letter
    for letter in string.ascii_lowercase
    if _NFKC_CF.normalize(_SPOOF.getSkeleton(0, letter)) != letter}


def _drop_marks(text: str) -> str:
    return "".join(ch for ch in _NFD.normalize(text)
                   if icu.Char.charType(ch) not in _MARKS
                   and not icu.Char.hasBinaryProperty(ch, _DEFAULT_IGNORABLE))


@functools.lru_cache(maxsize=1 << 16)  # bounded: a text may hold any code point
def plain_char(ch: str) -> str:
    """Case, compatibility form, ignorables and marks folded; the script is kept."""
    return _drop_marks(_NFKC_CF.normalize(ch))


@functools.lru_cache(maxsize=1 << 16)  # bounded: a text may hold any code point
def skeleton_char(ch: str) -> str:
    """plain_char, then the TS #39 skeleton (for non-ASCII), folded again until it is stable.

    Case folding first reads a capital by its lower case, as ASCII `I` is read as `i`, not as
    the `l` it looks like. A glyph that is not a capital is read as it looks: when the skeleton
    of the glyph as written is an ASCII letter, that letter wins (a lunate sigma looks like `c`,
    though it folds to the sigma that looks like `o`).
    """
    folded = _stable_skeleton(plain_char(ch))
    if ch == ch.lower() or len(folded) != 1 or not folded.isascii():
        as_written = _stable_skeleton(_drop_marks(_NFKC.normalize(ch)))
        if len(as_written) == 1 and as_written.isascii() and as_written.isalpha():
            folded = as_written
    return _ASCII_BY_SKELETON.get(folded, folded)


def _stable_skeleton(folded: str) -> str:
    for _ in range(4):  # a skeleton may come out in upper case or with marks: fold it again
        mapped = "".join(c if c.isascii() else plain_char(_SPOOF.getSkeleton(0, c))
                         for c in folded)
        if mapped == folded:
            break
        folded = mapped
    return plain_char(folded) if folded and not folded.islower() else folded


@functools.lru_cache(maxsize=1 << 16)  # bounded: a text may hold any code point
def _script(ch: str) -> str:
    name = icu.Script.getScript(ch).getShortName()
    return _SAME_WRITING.get(name, name)


@functools.lru_cache(maxsize=1 << 16)  # bounded: a text may hold any code point
def is_word_char(ch: str) -> bool:
    """Letters, digits, marks and invisibles, and the symbols drawn like a letter (the
    multiplication sign is `x`): inside a word they are a spelling of it, not a break."""
    if ch.isalnum() or not plain_char(ch) or icu.Char.charType(ch) in _MARKS:
        return True
    looks = skeleton_char(ch)
    return len(looks) == 1 and looks.isascii() and looks.isalpha()


def _uses_skeleton(word: str) -> bool:
    """Latin, script-less or mixed-script words are skeleton-mapped; one other script is not."""
    scripts = {_script(ch) for ch in word if not ch.isascii()} - _NO_SCRIPT
    if any(ch.isascii() and ch.isalpha() for ch in word):
        scripts.add("Latn")
    return len(scripts) != 1 or "Latn" in scripts


@functools.lru_cache(maxsize=1 << 16)
def fold_token(token: str, force_skeleton: bool = False) -> tuple[str, tuple[int, ...]]:
    """One whitespace-free token folded, and for each folded character its index in `token`."""
    if token.isascii():
        return token.lower(), tuple(range(len(token)))
    out: list[str] = []
    origins: list[int] = []
    index, size = 0, len(token)
    while index < size:
        end = index + 1
        if is_word_char(token[index]):
            while end < size and is_word_char(token[end]):
                end += 1
            fold = skeleton_char if force_skeleton or _uses_skeleton(token[index:end]) else (
                plain_char)
        else:
            fold = plain_char  # punctuation between words: compatibility and case only
        for position in range(index, end):
            ch = token[position]
            piece = ch.lower() if ch.isascii() else fold(ch)
            out.append(piece)
            origins.extend([position] * len(piece))
        index = end
    return "".join(out), tuple(origins)


def fold(text: str, force_skeleton: bool = False) -> str:
    """The folded text: every token folded, whitespace runs (and the ends) as one space."""
    if text.isascii():
        return " ".join(text.lower().split())
    out = []
    for token in text.split():
        if token.isascii():  # most tokens of most texts: skip the cache lookup
            out.append(token.lower())
            continue
        folded = fold_token(token, force_skeleton)[0]
        if folded:
            out.append(folded)
    return " ".join(out)


def fold_with_origins(text: str) -> tuple[str, list[int]]:
    """fold(text), and for each folded character the index in `text` it came from."""
    out: list[str] = []
    origins: list[int] = []
    for match in _TOKEN.finditer(text):
        folded, offsets = fold_token(match.group())
        if not folded:
            continue
        if out:
            out.append(" ")
            origins.append(match.start() - 1)  # the whitespace just before this token
        out.append(folded)
        start = match.start()
        origins.extend(start + offset for offset in offsets)
    return "".join(out), origins


def term_keys(term: str) -> tuple[str, ...]:
    """The spellings a term is looked for under: as text would fold it, and as a skeleton (for
    a non-Latin term with a look-alike letter slipped in, which makes its word mixed-script)."""
    if term.isascii():  # no skeleton applies to ASCII: one spelling
        key = fold(term)
        return (key,) if key else ()
    return tuple(dict.fromkeys(key for key in (fold(term), fold(term, force_skeleton=True))
                               if key))


def without_invisibles(text: str) -> str:
    """The text with default-ignorable characters removed and nothing else changed: what
    `matches /regex/` reads, so a zero-width character cannot split a pattern's match."""
    if text.isascii() or _INVISIBLE_SEARCH.search(text) is None:
        return text
    if _ASTRAL_INVISIBLE.search(text) is None:
        return _BMP_INVISIBLE.sub("", text)
    return _INVISIBLE.sub("", text)


def folds_to_nothing(ch: str) -> bool:
    """True for characters that leave nothing in the folded text (ignorables, marks)."""
    return not plain_char(ch)
