"""Output text through the configured classifier: the whole answer at once, and a stream in
windows of `stream_interval_chars` (never per frame: each window is one call).

A stream's windows are held back until their verdict (gateway/moderation/stream_windows.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import dsl
from dsl.classifiers import Classification
from dsl.decision import CATEGORY_SURFACES
from gateway.errors import ClassifierFailed
from gateway.moderation.policy_texts import category_texts
from gateway.moderation.service import CLASSIFIER_ERROR, ModerationOutcome, Moderator
from gateway.policy.decide import decide_output


def reads_output_categories(moderator: Moderator, policies: Sequence[dsl.CompiledPolicy],
                            facts: dsl.RequestFacts) -> bool:
    """True when an external classifier must look at the output: a rule tests an output
    category, on a surface where category rules apply (else nothing is sent)."""
    return moderator.client is not None and facts.surface in CATEGORY_SURFACES and any(
        "output" in category_texts(p) for p in policies)


async def moderated_output(moderator: Moderator, policies: Sequence[dsl.CompiledPolicy],
                           facts: dsl.RequestFacts, text: str, decision: dsl.Decision,
                           input_classification: Any, *, asked: bool = False
                           ) -> tuple[dsl.Decision, dict[str, Any]]:
    """`decision` after the output rules read `text` with the external classifier's output
    categories, and the record of them. A failure is the policies' `on_error`, as on input.
    `asked`: the project's policy asks for the external classifier always (`chain`)."""
    try:
        found = await moderator.classify_output(text, asked=asked)
    except ClassifierFailed as failed:
        decided = decide_output(list(policies), facts, text, decision)
        outcome = ModerationOutcome(Classification(), "builtin", error=failed.kind,
                                    reason_code=CLASSIFIER_ERROR,
                                    failed=moderator.client.name if moderator.client else None)
        return outcome.applied(decided, policies), {"error": failed.kind}
    base = input_classification if isinstance(input_classification, Classification) else (
        Classification())
    classification = Classification(base.categories, base.pii, base.pinned, MappingProxyType(
        {**base.by_text, "output": found}))
    decided = decide_output(list(policies), facts, text, decision, classification)
    return decided, {"categories": {c: round(s, 6) for c, s in sorted(
        found.categories.items())}, "error": None}


def with_output_record(record: dict[str, Any] | None, output: dict[str, Any]
                       ) -> dict[str, Any] | None:
    """The request's moderation record with what the output's classification found."""
    if record is None:
        return None
    previous = record.get("output") or {}
    categories = dict(previous.get("categories", {}))
    for category, score in output.get("categories", {}).items():
        categories[category] = max(categories.get(category, 0.0), score)
    return {**record, "output": {"categories": categories,
                                 "error": output.get("error") or previous.get("error")}}
