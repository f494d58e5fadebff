"""A governed stream's output through an external classifier, in windows (not per frame).

`WindowedStream` wraps the stream governor. The output text is gathered as it arrives, and
once `stream_interval_chars` new characters arrived (and once more at the end) the new text,
with a little of the previous window (so that a phrase cut at a window edge is seen whole), is
classified in one call and the policies' output rules read it. The relay awaits `checkpoint()`
after each batch of frames.

When the policy is enforced, the bytes the governor produces are held back until the window
holding their text was classified: no byte of a window reaches the client before its verdict
says it may, so an enforced refusal or escalation ends the stream with the API's own termination
frames and nothing of the flagged window. The hold-back is bounded by the interval (plus the
batch of frames that completed it). In shadow nothing is stopped, so nothing is held.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import dsl
from gateway.moderation.output import moderated_output, with_output_record
from gateway.moderation.service import Moderator
from gateway.policy.governance import combine
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
        #: The text not classified yet, after the end of the last window (classified again
        #: with the next one); what came before is dropped, so a long stream costs no more.
        self._text = ""
        self._checked = 0  # characters of `_text` classified so far
        #: Bytes for the client whose text is not classified yet (enforced streams only).
        self._pending: list[bytes] = []
        #: The governor's last sequence number when the pending bytes began: a refusal's
        #: termination frame must follow the last number the client got.
        self._released_number: int | None = None
        #: What the windows decided, kept: the built-in monitor, which knows only its own
        #: evidence, updates the decision at each block's end (in shadow the stream goes on).
        self._decided: dsl.Decision | None = None
        #: How many windows were classified (tests and benchmarks read it).
        self.windows = 0

    @property
    def stopped(self) -> bool:
        return self.governor.stopped

    @property
    def _holding(self) -> bool:
        return self.governor.governance.enforced

    def feed(self, frame: Frame, payload: dict[str, Any] | None) -> bytes:
        if payload is not None and not self.governor.stopped:
            self._text += self._delta_text(frame.event, payload)
        if not self._pending:
            self._released_number = self.governor.last_sequence_number
        out = self.governor.feed(frame, payload)
        self._keep_decided()
        if not self._holding or not (self._pending or len(self._text) > self._checked):
            return out  # shadow, or no unclassified text yet (the stream's opening frames)
        if out:
            self._pending.append(out)
        return b""

    def finish(self) -> bytes:
        # Everything fed was classified by the final checkpoint: the governor's tail may go.
        released = self._release()
        tail = self.governor.finish()
        self._keep_decided()
        return released + tail

    def error_extra(self) -> Mapping[str, Any] | None:
        return self.governor.error_extra()

    async def checkpoint(self, final: bool = False) -> bytes:
        """Classify the next window once it is full (or, `final`, whatever is left), and
        release what it covers when its verdict lets it go."""
        fresh = len(self._text) - self._checked
        # A stream the built-in monitor stopped ends now: its last text is checked first.
        final = final or self.governor.stopped
        if fresh <= 0 or (fresh < self._interval and not final):
            return self._release() if fresh <= 0 and final else b""
        window, overlap = self._text, self._interval // OVERLAP_FRACTION
        self._text = window[-overlap:] if overlap else ""
        self._checked = len(self._text)
        self.windows += 1
        gov = self.governor.governance
        decision, found = await moderated_output(
            self._moderator, self._policies, self._facts, window, gov.decision, self._input,
            asked=self._moderator.asks_external(gov.policy_id))
        # Redaction is the stream monitor's (it counts what it redacts); a window only decides.
        decision = dataclasses.replace(decision, redacted_spans=gov.decision.redacted_spans)
        gov.moderation = with_output_record(gov.moderation, found)
        if decision != gov.decision:
            if gov.enforced and decision.decision in ("refuse", "escalate"):
                self._pending.clear()  # nothing of the flagged window goes out
                return self.governor.stop_with(decision, last_number=self._released_number)
            gov.update(decision)
            self._decided = decision
        return self._release()

    def _keep_decided(self) -> None:
        gov = self.governor.governance
        if self._decided is not None and gov.decision.severity < self._decided.severity:
            gov.update(combine(gov.decision, self._decided))

    def _release(self) -> bytes:
        out = b"".join(self._pending)
        self._pending.clear()
        return out

    def _delta_text(self, event: str | None, payload: dict[str, Any]) -> str:
        adapter = self.governor.adapter
        text = adapter.stream_delta(event, payload)
        if text is not None:
            return text
        parts = adapter.split_output(event, payload) or []  # several deltas in one frame
        return "".join(adapter.stream_delta(event, part) or "" for part in parts)
