"""Sans-I/O incremental evaluation of output rules over a streamed response.

`feed(delta)` returns the text that is safe to send now and, when it changed, the new Decision.
Only the suffix that could still become (part of) a match of an output test is held back
(dsl/holdback.py: a term's live prefix in the automaton, a trailing run that could still be a
PII value, a bounded window for patterns and categories), so every match split across chunks is
seen whole before any of it is released.  Once an enforced refuse/escalate fires, nothing more
is released: the violating text never leaves.

Rules that test for the *absence* of something in the output (`not output contains ...`) cannot
be decided on a window; they are decided by `finish()` over the whole text.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from dsl.conditions import EvalContext
from dsl.decision import Decision, Redactor, RequestFacts
from dsl.fold import folds_to_nothing
from dsl.outcome import Outcome

if TYPE_CHECKING:
    from dsl.compiler import CompiledPolicy

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
        self._decided: Decision | None = None
        self._fresh_counts = False
        self._counted: tuple[Decision, Decision] | None = None
        #: A decision found the same as `_current` but for its stage (not news mid-stream).
        self._same_mid_stream: Decision | None = None

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
        ctx = self._window_context(self._pending)
        self._absorb(self._policy.run_rules(self._window_rules, ctx))
        decision = self._decision()
        if self._enforced and decision.decision in STOPPING:
            released = self._release_before_violation(decision)
            return released, self._stop(decision)
        cut = self._policy.hold_back.start(self._before, self._pending)
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
    def _window_context(self, pending: str) -> EvalContext:
        ctx = EvalContext(self._facts, None, self._policy._pattern_sets,
                          output=self._before + pending, open_end=True)
        # The released character before the window is a word boundary, not a place to start.
        ctx.output_context = bool(self._before) and not self._before.isspace()
        return ctx

    def _absorb(self, outcome: Outcome) -> None:
        # The held-back window overlaps from one feed to the next, so the same evidence is
        # found again and again: only new evidence makes the decision worth recomputing.
        for rule, evidence in outcome.fired:
            previous = self._fired.get(rule.rule_id)
            known = previous[1] if previous else []
            fresh = [item for item in evidence if item not in known]
            if previous is None or fresh:
                self._fired[rule.rule_id] = (rule, known + fresh)
                self._decided = None
        for rule_id, message in outcome.errors:
            if rule_id not in self._errors:
                self._errors[rule_id] = message
                self._decided = None
        for hit in outcome.allowlist_hits:
            if hit not in self._allowlist_hits:
                self._allowlist_hits[hit] = None
                self._decided = None

    def _decision(self) -> Decision:
        if self._decided is None:
            outcome = Outcome(list(self._fired.values()), list(self._errors.items()),
                              list(self._allowlist_hits))
            self._decided = self._policy.decide(outcome, "output", "", self._base,
                                                count_redactions=False)
        return self._decided

    def _with_counts(self, decision: Decision) -> Decision:
        if self._counted is not None and self._counted[0] is decision and not self._fresh_counts:
            return self._counted[1]
        self._fresh_counts = False
        counted = self._counts_applied(decision)
        self._counted = (decision, counted)
        return counted

    def _counts_applied(self, decision: Decision) -> Decision:
        spans = dict(self._base.redacted_spans)
        for kind, count in self._counts.items():
            spans[kind] = spans.get(kind, 0) + count
        return dataclasses.replace(decision, redacted_spans=MappingProxyType(spans))

    def _changed(self, decision: Decision, final: bool = False) -> Decision | None:
        """The decision if it differs from the last one reported.  Mid-stream, the stage alone
        flipping to "output" is not news; `finish()` reports it (output rules have then run)."""
        # Most frames: nothing new fired, and the decision is an object already compared.
        if decision is self._current or (not final and decision is self._same_mid_stream):
            return None
        old, new = self._current.summary(), decision.summary()
        if not final:
            old.pop("stage")
            new.pop("stage")
        if new == old and decision.obligations.message == self._current.obligations.message:
            if not final:
                self._same_mid_stream = decision
            return None
        self._current = decision
        return decision

    def _release_before_violation(self, decision: Decision) -> str:
        """The held text that certainly precedes the violation, redacted (hold back at most
        the window, docs/governed-surface.md). A chunk may bring safe text and a violation together.

        Prefixes of the pending text are checked in steps; at the first step whose prefix
        fires a stopping rule, the violation ends after the previous step (a match at the
        very end of a prefix is not counted, as more text could extend the word), so it starts
        in what the previous step still had to hold back, and everything before that is safe.
        Runs once per stream, when it stops.
        """
        pending = self._pending
        step = max(16, len(pending) // 64)
        previous = 0
        for end in range(step, len(pending) + step, step):
            end = min(end, len(pending))
            ctx = self._window_context(pending[:end])
            outcome = self._policy.run_rules(self._window_rules, ctx)
            if any(rule.decision in STOPPING for rule, _ in outcome.fired):
                break
            previous = end
        cut = self._policy.hold_back.start(self._before, pending[:previous])
        if cut <= 0:
            return ""
        redactor = decision.obligations.redactor
        if redactor is None:
            return pending[:cut]
        return self._redacted(redactor, self._before, pending[:cut])

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
        before, self._before = self._before, _last_visible(released, self._before)
        if redactor is not None and released:
            released = self._redacted(redactor, before, released)
        return released, self._changed(self._with_counts(decision), final)

    def _redacted(self, redactor: Redactor, before: str, released: str) -> str:
        """`released` redacted, read after the released character before it: the end of a
        word released earlier ("coun" + "try") is no word boundary for a term ("try")."""
        redacted, counts = redactor.apply(before + released)
        if not redacted.startswith(before):  # the context itself was redacted: read it alone
            redacted, counts = redactor.apply(released)
        else:
            redacted = redacted[len(before):]
        for kind, count in counts.items():
            self._counts[kind] = self._counts.get(kind, 0) + count
            self._fresh_counts = True
        return redacted


def _last_visible(released: str, before: str) -> str:
    """The character left of what is still held: the last one that folds to something, since an
    invisible character or a mark is no word boundary."""
    for ch in reversed(released):
        if not folds_to_nothing(ch):
            return ch
    return before

