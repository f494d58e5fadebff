"""Category phrases are folded like policy terms: invisible characters, added accents and
look-alike letters in a positive text leave its categories as they were."""

from __future__ import annotations

import random

from corpora import category_positives

from dsl.classifiers import CATEGORY_THRESHOLD, classify_categories

CYRILLIC_LOOKALIKES = str.maketrans({"o": "\u043e", "a": "\u0430", "e": "\u0435"})


def disguise(text: str, seed: int) -> str:
    """Every third word: a zero-width space inside, an accent added, or look-alike vowels."""
    rng = random.Random(seed)
    words = text.split(" ")
    for index in range(0, len(words), 3):
        word = words[index]
        if len(word) < 2 or not word.isascii():
            continue
        trick = rng.randrange(3)
        if trick == 0:
            words[index] = word[0] + "\u200b" + word[1:]
        elif trick == 1:
            words[index] = word[0] + "\u0301" + word[1:]
        elif word.translate(CYRILLIC_LOOKALIKES) != word and word.lower() != word.upper():
            words[index] = word.translate(CYRILLIC_LOOKALIKES)
    return " ".join(words)


def test_disguised_positives_keep_their_categories():
    changed, triggered = [], 0
    for index, row in enumerate(category_positives()):
        plain = {c for c, s in classify_categories(row["text"]).items() if s >= CATEGORY_THRESHOLD}
        tricky_text = disguise(row["text"], index)
        tricky = {c for c, s in classify_categories(tricky_text).items()
                  if s >= CATEGORY_THRESHOLD}
        triggered += bool(plain)
        if tricky != plain:
            changed.append((row["text"], tricky_text, plain, tricky))
    assert triggered >= 40
    assert changed == []
