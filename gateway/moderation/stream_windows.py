"""A governed stream's output through an external classifier, in windows (not per frame).

`WindowedStream` wraps the stream governor: frames go through it unchanged, and the output text
is gathered. The relay awaits `checkpoint()` after each batch of frames: once
`stream_interval_chars` new characters arrived (and once more at the end), the new text with a
little of the previous window (so that a phrase cut at a window edge is seen whole) is
classified in one call, and the policies' output rules read it. An enforced refuse or escalate
ends the stream there with the API's own termination frames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import dsl
from gateway.moderation.output import moderated_output, with_output_record
from gateway.moderation.service import Moderator
from gateway.policy.stream import StreamGovernor
from gateway.upstream.sse import Frame

#: Characters of the previous window classified again with the next one.
OVERLAP_FRACTION = 4


class WindowedStream:
    def __init__(self, governor: StreamGovernor, moderator: Moderator,
                 policies: Sequence[dsl.CompiledPolicy], facts: dsl.RequestFacts,
                 input_classification: Any) -> None:
        self.governor = governor
        self._moderator = moderator
        self._policies = policies
        self._facts = facts
        self._input = input_classification
        self._interval = moderator.settings.stream_interval_chars
        self._text = ""
        self._checked = 0  # characters of `_text` classified so far
        #: How many windows were classified (tests and benchmarks read it).
        self.windows = 0

    @property
    def stopped(self) -> bool:
        return self.governor.stopped

    def feed(self, frame: Frame, payload: dict[str, Any] | None) -> bytes:
        if payload is not None and not self.governor.stopped:
            delta = self.governor.adapter.stream_delta(frame.event, payload)
            if delta:
                self._text += delta
        return self.governor.feed(frame, payload)

    def finish(self) -> bytes:
        return self.governor.finish()

    def error_extra(self) -> Mapping[str, Any] | None:
        return self.governor.error_extra()

    async def checkpoint(self, final: bool = False) -> bytes:
        """Classify the next window once it is full (or, `final`, whatever is left)."""
        fresh = len(self._text) - self._checked
        if self.governor.stopped or fresh <= 0 or (fresh < self._interval and not final):
            return b""
        start = max(self._checked - self._interval // OVERLAP_FRACTION, 0)
        window, self._checked = self._text[start:], len(self._text)
        self.windows += 1
        gov = self.governor.governance
        decision, found = await moderated_output(self._moderator, self._policies, self._facts,
                                                 window, gov.decision, self._input)
        # Redaction is the stream monitor's (it counts what it redacts); a window only decides.
        decision = dataclasses.replace(decision, redacted_spans=gov.decision.redacted_spans)
        gov.moderation = with_output_record(gov.moderation, found)
        if decision == gov.decision:
            return b""
        if gov.enforced and decision.decision in ("refuse", "escalate"):
            return self.governor.stop_with(decision)
        gov.update(decision)
        return b""
