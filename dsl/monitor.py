"""Sans-I/O incremental evaluation of output rules over a streamed response.

`feed(delta)` returns the text that is safe to send now and, when it changed, the new Decision.
Only the trailing `output_window` characters (counted after normalisation: a run of whitespace
counts once, combining marks not at all) are held back, which is enough for any term, literal or
bounded pattern split across chunks to be seen whole before any of it is released.  Once an
enforced refuse/escalate fires, nothing more is released: the violating text never leaves.

Rules that test for the *absence* of something in the output (`not output contains ...`) cannot
be decided on a window; they are decided by `finish()` over the whole text.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from dsl.conditions import EvalContext
from dsl.decision import Decision, RequestFacts

if TYPE_CHECKING:
    from dsl.compiler import CompiledPolicy, Outcome

STOPPING = ("refuse", "escalate")


class OutputMonitor:
    def __init__(self, policy: CompiledPolicy, facts: RequestFacts, decision: Decision,
                 enforced: bool = True) -> None:
        self._policy = policy
        self._facts = facts
        self._base = decision
        self._current = decision
        self._enforced = enforced
        self._chunks: list[str] = []
        self._pending = ""
        self._before = ""  # last released character: the word boundary left of `_pending`
        self._stopped = False
        self._fired: dict[str, tuple[Any, list[tuple[str, Any]]]] = {}
        self._errors: dict[str, str] = {}
        self._allowlist_hits: dict[str, None] = {}
        self._counts: dict[str, int] = {}
        self._window_rules = policy.output_rules(stream_safe_only=True)

    @property
    def stopped(self) -> bool:
        """True once an enforced refuse/escalate fired: the stream must end now."""
        return self._stopped

    def feed(self, delta: str) -> tuple[str, Decision | None]:
        if self._stopped:
            return "", None
        self._chunks.append(delta)
        if not self._policy.has_output_rules:
            return delta, None
        self._pending += delta
        ctx = EvalContext(self._facts, None, self._policy._pattern_sets,
                          output=self._before + self._pending, open_end=True)
        self._absorb(self._policy.run_rules(self._window_rules, ctx))
        decision = self._decision()
        if self._enforced and decision.decision in STOPPING:
            return "", self._stop(decision)
        cut = _hold_start(self._pending, self._policy.output_window)
        return self._release(cut, decision)

    def finish(self) -> tuple[str, Decision | None]:
        if self._stopped:
            return "", None
        if not self._policy.has_output_rules:
            return "", None
        ctx = EvalContext(self._facts, None, self._policy._pattern_sets,
                          output="".join(self._chunks))
        outcome = self._policy.run_rules(self._policy.output_rules(False), ctx)
        self._policy.check_allowlist(ctx, "output", outcome)
        self._absorb(outcome)
        decision = self._decision()
        if self._enforced and decision.decision in STOPPING:
            return "", self._stop(decision)
        return self._release(len(self._pending), decision, final=True)

    # --- internals
    def _absorb(self, outcome: Outcome) -> None:
        for rule, evidence in outcome.fired:
            previous = self._fired.get(rule.rule_id)
            self._fired[rule.rule_id] = (rule, (previous[1] if previous else []) + evidence)
        for rule_id, message in outcome.errors:
            self._errors.setdefault(rule_id, message)
        self._allowlist_hits.update(dict.fromkeys(outcome.allowlist_hits))

    def _decision(self) -> Decision:
        from dsl.compiler import Outcome

        outcome = Outcome(list(self._fired.values()), list(self._errors.items()),
                          list(self._allowlist_hits))
        return self._policy.decide(outcome, "output", "", self._base, count_redactions=False)

    def _with_counts(self, decision: Decision) -> Decision:
        spans = dict(self._base.redacted_spans)
        for kind, count in self._counts.items():
            spans[kind] = spans.get(kind, 0) + count
        return dataclasses.replace(decision, redacted_spans=MappingProxyType(spans))

    def _changed(self, decision: Decision, final: bool = False) -> Decision | None:
        """The decision if it differs from the last one reported.  Mid-stream, the stage alone
        flipping to "output" is not news; `finish()` reports it (output rules have then run)."""
        old, new = self._current.summary(), decision.summary()
        if not final:
            old.pop("stage")
            new.pop("stage")
        if new == old and decision.obligations.message == self._current.obligations.message:
            return None
        self._current = decision
        return decision

    def _stop(self, decision: Decision) -> Decision | None:
        self._stopped = True
        self._pending = ""
        return self._changed(self._with_counts(decision))

    def _release(self, cut: int, decision: Decision,
                 final: bool = False) -> tuple[str, Decision | None]:
        redactor = decision.obligations.redactor
        if redactor is not None and cut:
            offset = len(self._before)
            for start, end in redactor.spans(self._before + self._pending):
                if start - offset < cut < end - offset:
                    cut = max(start - offset, 0)  # never cut through a span to be redacted
        released, self._pending = self._pending[:cut], self._pending[cut:]
        if released:
            self._before = released[-1]
        if redactor is not None and released:
            released, counts = redactor.apply(released)
            for kind, count in counts.items():
                self._counts[kind] = self._counts.get(kind, 0) + count
        return released, self._changed(self._with_counts(decision), final)


def _hold_start(pending: str, window: int) -> int:
    """Index in `pending` from which the last `window` normalised characters start."""
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
