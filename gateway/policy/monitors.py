"""Output monitors the stream governor uses besides the policy language's own incremental
one: for tool-call arguments no output rule reads, and for text two policies decide."""

from __future__ import annotations

import dsl
from gateway.policy.governance import combine


class Unwatched:
    """The monitor of a tool call's arguments when no output rule reads them: they are only
    held for the call's verdict."""

    stopped = False

    def feed(self, delta: str) -> tuple[str, dsl.Decision | None]:
        return delta, None

    def finish(self) -> tuple[str, dsl.Decision | None]:
        return "", None


class WholeBlockMonitor:
    """The monitor used when two policies with output rules govern one stream (a project
    policy and a caller's inline policy). Their incremental monitors would hold back different
    amounts of differently redacted text, so instead each text block is held back whole and
    decided by both policies at its end: slower to start, never leaking."""

    def __init__(self, policies: list[dsl.CompiledPolicy], facts: dsl.RequestFacts,
                 decision: dsl.Decision, enforced: bool) -> None:
        self._policies = policies
        self._facts = facts
        self._decision = decision
        self._enforced = enforced
        self._chunks: list[str] = []
        self.stopped = False

    def feed(self, delta: str) -> tuple[str, dsl.Decision | None]:
        self._chunks.append(delta)
        return "", None

    def finish(self) -> tuple[str, dsl.Decision | None]:
        text = "".join(self._chunks)
        decision = self._decision
        for policy in self._policies:
            decision = combine(decision, policy.evaluate_output(self._facts, text, decision))
        if self._enforced and decision.decision in ("refuse", "escalate"):
            self.stopped = True
            return "", decision
        redactor = decision.obligations.redactor
        if redactor is not None:
            text = redactor.apply(text)[0]
        return text, decision
