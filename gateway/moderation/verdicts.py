"""External classifiers' answers -> our category scores (docs/classifiers.md), without I/O.

- OpenAI moderation: its categories are ours, one to one; the scores are `category_scores`.
- Llama Guard 3/4: a verdict `safe`, or `unsafe` and a line of hazard codes (`S1,S10`), mapped
  through `LLAMA_GUARD_CATEGORIES`. Scores are 1.0 for a flagged code's categories, unless the
  server returned log-probabilities for the verdict token: then the probability of `unsafe`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dsl.classifiers import CATEGORIES
from gateway.errors import MalformedVerdict

#: Llama Guard 3 and 4 hazard codes (MLCommons taxonomy) -> our categories. Codes with no
#: counterpart among ours (defamation, specialized advice, privacy, intellectual property,
#: elections) map to nothing: the verdict records them, no category rule can test them.
LLAMA_GUARD_CATEGORIES: Mapping[str, tuple[str, ...]] = {
    "S1": ("violence", "illicit/violent"),        # violent crimes
    "S2": ("illicit",),                           # non-violent crimes
    "S3": ("sexual", "illicit"),                  # sex-related crimes
    "S4": ("sexual/minors", "sexual"),            # child sexual exploitation
    "S5": (),                                     # defamation
    "S6": (),                                     # specialized advice
    "S7": (),                                     # privacy
    "S8": (),                                     # intellectual property
    "S9": ("illicit/violent", "violence"),        # indiscriminate weapons
    "S10": ("hate",),                             # hate
    "S11": ("self-harm",),                        # suicide and self-harm
    "S12": ("sexual",),                           # sexual content
    "S13": (),                                    # elections
    "S14": ("illicit",),                          # code interpreter abuse
}
_CODE = re.compile(r"S\d{1,2}")




@dataclass(frozen=True, slots=True)
class Verdict:
    """Category scores (> 0 only) and the hazard codes no category of ours stands for."""

    scores: Mapping[str, float]
    unmapped: tuple[str, ...] = ()


def openai_results(answer: Any, expected: int) -> list[Verdict]:
    """The `results` of a `/v1/moderations` answer, one per input, in input order."""
    if not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
        raise MalformedVerdict("the moderation answer has no `results` list")
    results = answer["results"]
    if len(results) != expected:
        raise MalformedVerdict(f"the moderation answer has {len(results)} results for "
                               f"{expected} inputs")
    return [_openai_result(result) for result in results]


def _openai_result(result: Any) -> Verdict:
    scores = result.get("category_scores") if isinstance(result, dict) else None
    if not isinstance(scores, dict):
        raise MalformedVerdict("a moderation result has no `category_scores` object")
    found: dict[str, float] = {}
    for category in CATEGORIES:
        score = scores.get(category, 0.0)
        if isinstance(score, bool) or not isinstance(score, int | float) or not (
                0.0 <= score <= 1.0):
            raise MalformedVerdict(f"category score of {category!r} is not a number in [0, 1]")
        if score > 0:
            found[category] = float(score)
    return Verdict(found)


def llama_guard_verdict(answer: Any) -> Verdict:
    """The verdict in a chat completion answer of a Llama Guard model."""
    try:
        choice = answer["choices"][0]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise MalformedVerdict("the Llama Guard answer has no message content") from None
    if not isinstance(content, str):
        raise MalformedVerdict("the Llama Guard answer's content is not text")
    lines = [line.strip() for line in content.strip().splitlines() if line.strip()]
    if lines == ["safe"]:
        return Verdict({})
    if not lines or lines[0] != "unsafe" or len(lines) != 2:
        raise MalformedVerdict("the Llama Guard verdict is neither `safe` nor `unsafe` and a "
                               "line of hazard codes")
    codes = [code.strip() for code in lines[1].split(",")]
    if not codes or not all(_CODE.fullmatch(code) for code in codes):
        raise MalformedVerdict("the Llama Guard verdict's codes are not of the form S1,S10")
    score = _unsafe_probability(choice)
    scores: dict[str, float] = {}
    unmapped = []
    for code in dict.fromkeys(codes):
        mapped = LLAMA_GUARD_CATEGORIES.get(code)
        if not mapped:
            unmapped.append(code)
        for category in mapped or ():
            scores[category] = max(scores.get(category, 0.0), score)
    return Verdict(scores, tuple(unmapped))


def _unsafe_probability(choice: Mapping[str, Any]) -> float:
    """P(`unsafe`) from the verdict token's log-probability, or 1.0 without one."""
    try:
        first = choice["logprobs"]["content"][0]
        token, logprob = str(first["token"]).strip(), float(first["logprob"])
    except (KeyError, IndexError, TypeError, ValueError):
        return 1.0
    if token != "unsafe" or not math.isfinite(logprob) or logprob > 0:
        return 1.0
    return math.exp(logprob)
