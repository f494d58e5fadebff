"""Governing a stream, sans-I/O: decoded upstream frames in, bytes for the client out (SPEC §7.3).

For each frame the `StreamGovernor`:
- adds the `policy` object to the frame's JSON (spliced in, not re-encoded); `[DONE]`, `event:`
  lines and comments stay as they are;
- feeds text deltas to the policy's output monitor, which holds back only the window a rule needs
  and releases the rest; the frame carries what was released;
- before the frame that closes a text block (whose "done" frames may repeat the whole text), it
  finishes the monitor and sends what was held back in a delta frame of the same shape;
- when an enforced output rule refuses or escalates, ends the stream with the API's own
  termination frames: the violating text never reaches the client;
- collects the usage the upstream reports and, when the client did not ask for usage, drops the
  usage-only chunk the gateway asked for;
- keeps numbered events (responses' `sequence_number`) unique and in order: every frame after
  one the gateway inserted moves up by one, and a termination frame follows the last number.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dsl
from gateway.adapters.base import Adapter, dumps
from gateway.errors import PolicyRefused
from gateway.policy.governance import Governance
from gateway.policy.lifecycle import StreamCounts
from gateway.upstream.sse import Frame, encode_frame

MonitorFactory = Callable[[dsl.Decision], Any]
DEFAULT_REFUSAL = "The response was stopped by policy."


class StreamGovernor:
    def __init__(self, adapter: Adapter, governance: Governance,
                 monitor_factory: MonitorFactory | None, *, client_asked_usage: bool = True):
        self.adapter = adapter
        self.governance = governance
        self._monitor_factory = monitor_factory
        self._client_asked_usage = client_asked_usage
        self._monitor: Any = None
        self._template: tuple[str | None, dict[str, Any]] | None = None
        #: The stream's first frame (chat's first chunk, `message_start`, `response.created`):
        #: it carries the ids a termination frame must repeat.
        self._first_payload: dict[str, Any] | None = None
        #: Output text as the upstream sent it, and as the client got it (after redaction).
        self._fed: list[str] = []
        self._released: list[str] = []
        #: Frames the gateway inserted so far, and the last sequence number the client got.
        self._inserted = 0
        self._last_number: int | None = None
        self.input_tokens = 0
        self.output_tokens = 0
        #: True once the upstream reported usage; until then `output_chars` is all we know.
        self.usage_reported = False
        #: Characters of output text the upstream streamed (for an estimate without usage).
        self.output_chars = 0
        #: True once the stream was ended by an output rule; feed nothing more.
        self.stopped = False

    def feed(self, frame: Frame, payload: dict[str, Any] | None) -> bytes:
        if self.stopped:
            return b""
        if payload is None:  # `[DONE]` or a comment frame
            out = self._flush() if frame.is_done and self._monitor is not None else b""
            return out if self.stopped else out + frame.raw
        adapter, event = self.adapter, frame.event
        if self._first_payload is None:
            self._first_payload = payload
        usage = adapter.stream_usage(event, payload)
        if usage is not None:
            self.usage_reported = True
            self.input_tokens = max(self.input_tokens, usage.input_tokens)
            self.output_tokens = max(self.output_tokens, usage.output_tokens)
            if not self._client_asked_usage and adapter.is_usage_only_chunk(event, payload):
                return b""
        delta = adapter.stream_delta(event, payload)
        if delta is not None:
            self.output_chars += len(delta)
        if delta is not None and self._monitor_factory is not None:
            return self._feed_delta(event, payload, delta)
        out = b""
        if self._monitor is not None and (adapter.is_text_end(event, payload)
                                          or adapter.is_terminal(frame)):
            out = self._flush()
            if self.stopped:
                return out
        outgoing = payload
        if self._fed:
            released = "".join(self._released)
            if released != "".join(self._fed):
                # The client got redacted text: frames that repeat the whole output must too.
                outgoing = adapter.with_released_text(event, payload, released)
        outgoing = self._renumbered(outgoing)
        if outgoing is not payload:
            return out + self._encode(event, outgoing)
        return out + self._with_policy(frame)

    def finish(self) -> bytes:
        """The upstream stream ended normally: release whatever is still held back."""
        return self._flush() if self._monitor is not None and not self.stopped else b""

    def stop_with(self, decision: dsl.Decision) -> bytes:
        """End the stream now for `decision` (an external classifier's window check)."""
        self.governance.update(decision)
        return self._stop()

    def error_extra(self) -> dict[str, Any]:
        """An error frame ending the stream carries the `policy` object too."""
        return {"policy": self.governance.policy_object()}

    def counts(self) -> StreamCounts:
        """What the stream told us about its usage, for settling the quota."""
        return StreamCounts(self.input_tokens, self.output_tokens,
                            usage_reported=self.usage_reported, output_chars=self.output_chars)

    # --- internals

    def _feed_delta(self, event: str | None, payload: dict[str, Any], delta: str) -> bytes:
        assert self._monitor_factory is not None
        if self._monitor is None:
            self._monitor = self._monitor_factory(self.governance.decision)
        released, changed = self._monitor.feed(delta)
        self._fed.append(delta)
        self._released.append(released)
        if changed is not None:
            self.governance.update(changed)
        self._template = (event, payload)
        if self._monitor.stopped:
            # Text that certainly precedes the violation still goes out, then the stop.
            head = b""
            if released:
                head = self._encode(event, self._renumbered(
                    self.adapter.with_stream_delta(event, payload, released)))
            return head + self._stop()
        if released != delta:
            payload = self.adapter.with_stream_delta(event, payload, released)
        return self._encode(event, self._renumbered(payload))

    def _flush(self) -> bytes:
        released, changed = self._monitor.finish()
        self._monitor = None
        if changed is not None:
            self.governance.update(changed)
        if changed is not None and self.governance.enforced and \
                changed.decision in ("refuse", "escalate"):
            return self._stop()
        self._released.append(released)
        if not released or self._template is None:
            return b""
        event, template = self._template
        payload = self.adapter.with_stream_delta(event, template, released)
        if self._last_number is not None:
            self._inserted += 1
            self._last_number += 1
            payload = self.adapter.with_sequence_number(payload, self._last_number)
        return self._encode(event, payload)

    def _stop(self) -> bytes:
        self.stopped = True
        decision = self.governance.decision
        error = PolicyRefused(decision.obligations.message or DEFAULT_REFUSAL)
        template = self._first_payload
        if template is not None and self._last_number is not None:
            # The termination frame's number follows the last one the client got.
            template = self.adapter.with_sequence_number(template, self._last_number)
        return self.adapter.output_refusal_frames(
            template, error, {"policy": self.governance.policy_object()})

    def _renumbered(self, payload: dict[str, Any]) -> dict[str, Any]:
        """`payload` numbered after the frames the gateway inserted (itself when unchanged)."""
        number = self.adapter.sequence_number(payload)
        if number is None:
            return payload
        self._last_number = number + self._inserted
        if not self._inserted:
            return payload
        return self.adapter.with_sequence_number(payload, self._last_number)

    def _encode(self, event: str | None, payload: dict[str, Any]) -> bytes:
        return encode_frame(self.governance.with_policy(dumps(payload)), event=event)

    def _with_policy(self, frame: Frame) -> bytes:
        assert frame.data is not None
        return encode_frame(self.governance.with_policy(frame.data.encode("utf-8")),
                            event=frame.event)


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
        from gateway.policy.governance import combine

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
