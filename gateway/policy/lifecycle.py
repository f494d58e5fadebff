"""The life of one governed request, sans-I/O: events in, effects out.

A governed request holds a quota reservation from admission until it ends, and records exactly
one event, whatever ends it: a completed answer or stream, a refusal, an escalation, an
upstream failure before or after the first byte, the client leaving, or the shutdown cut. This
machine is where that rule lives. The surface (gateway/surfaces/policy_run.py) tells it what
happened and carries out the effects it returns; it never decides on its own whether to settle,
release or record.

    ADMISSION ──quota_refused (429, or 503 store down)─────────────────▶ DONE  [Record]
        │ admitted
        ▼
    DECIDING ──finish (refused, escalated, error)───────────────────────▶ DONE  [Release|Settle, Record]
        │ upstream_called
        ▼
    UPSTREAM ──finish (whole answer, upstream error, client gone, cut)──▶ DONE  [Release|Settle, Record]
        │ stream_started
        ▼
    STREAMING ─finish_stream (completed, refused, error, client gone)───▶ DONE  [Settle, Record]

In DONE every event is answered with no effect: a second ending (the stream's own end, then the
server closing it) can never record a second event or settle twice. A reservation is settled
with what the upstream used. It is released when the upstream was never called, or when it
failed without reporting usage (or the shutdown cut the wait). A request the upstream has
(a stream, a client that left before the answer, an answer without usage) is charged at least
the input estimate, since the upstream read the input even when nothing came back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.errors import InvalidTransition


class Phase(enum.Enum):
    ADMISSION = "admission"
    DECIDING = "deciding"
    UPSTREAM = "upstream"
    STREAMING = "streaming"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Release:
    """Give the quota reservation back: nothing was used."""


@dataclass(frozen=True, slots=True)
class Settle:
    """Charge the reservation with what the upstream used."""

    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Record:
    """Emit the request's one event."""

    status: int
    outcome: str
    input_tokens: int
    output_tokens: int


Effect = Release | Settle | Record


@dataclass(frozen=True, slots=True)
class StreamCounts:
    """What a relayed stream told us about its usage."""

    input_tokens: int = 0
    output_tokens: int = 0
    #: True once the upstream reported usage; until then `output_chars` is all we know.
    usage_reported: bool = False
    #: Characters of output text the upstream streamed.
    output_chars: int = 0


def stream_usage(counts: StreamCounts, outcome: str, estimated_input_tokens: int
                 ) -> tuple[int, int]:
    """(input, output) tokens to charge for a stream. A stream that ended before its usage
    (client gone, upstream reset, stopped by policy) is charged the estimated input and at least
    what was streamed, at about four characters a token."""
    input_tokens, output_tokens = counts.input_tokens, counts.output_tokens
    if not counts.usage_reported or (outcome != "completed" and not output_tokens):
        input_tokens = max(input_tokens, estimated_input_tokens)
        output_tokens = max(output_tokens, -(-counts.output_chars // 4))
    return input_tokens, output_tokens


#: Endings after the upstream call that give the reservation back when the upstream reported
#: no usage: it failed or refused (its own error), or the gateway's shutdown cut the wait.
#: Any other (the client leaving, an answer without usage) is charged the input estimate.
NOT_CHARGED = frozenset({"upstream_error", "shutdown"})


class RequestLifecycle:
    """One governed request's phase; each method is an event and returns the effects."""

    def __init__(self, estimated_input_tokens: int = 0) -> None:
        self.phase = Phase.ADMISSION
        self.estimated_input_tokens = estimated_input_tokens
        #: The event recorded, once there is one.
        self.recorded: Record | None = None

    def quota_refused(self, status: int = 429, outcome: str = "quota_exceeded") -> list[Effect]:
        """Admission refused (a quota used up, or the quota store down and failing closed):
        nothing is reserved, and the request goes nowhere."""
        self._expect(Phase.ADMISSION)
        return self._done(None, Record(status, outcome, 0, 0))

    def admitted(self) -> list[Effect]:
        self._expect(Phase.ADMISSION)
        self.phase = Phase.DECIDING
        return []

    def upstream_called(self) -> list[Effect]:
        self._expect(Phase.DECIDING)
        self.phase = Phase.UPSTREAM
        return []

    def stream_started(self) -> list[Effect]:
        self._expect(Phase.UPSTREAM)
        self.phase = Phase.STREAMING
        return []

    def finish(self, status: int, outcome: str, input_tokens: int = 0,
               output_tokens: int = 0) -> list[Effect]:
        """The request ended before any stream: refused, escalated, answered whole, or failed.
        Tokens are what the upstream reported (none when it was never called)."""
        if self.phase is Phase.DONE:
            return []
        if self.phase is Phase.STREAMING:
            return self.finish_stream(status, outcome, StreamCounts(
                input_tokens, output_tokens, usage_reported=bool(input_tokens or output_tokens)))
        if self.phase is Phase.ADMISSION:
            raise InvalidTransition("a request ends before admission only by a quota refusal")
        charge: Effect = Release()
        if input_tokens or output_tokens:
            charge = Settle(input_tokens, output_tokens)
        elif self.phase is Phase.UPSTREAM and outcome not in NOT_CHARGED:
            # The upstream has the request and reads its input whether or not the client
            # waits for the answer: leaving early must not give the request back.
            input_tokens = self.estimated_input_tokens
            charge = Settle(input_tokens, 0)
        return self._done(charge, Record(status, outcome, input_tokens, output_tokens))

    def finish_stream(self, status: int, outcome: str, counts: StreamCounts) -> list[Effect]:
        """The relayed stream ended, however it did."""
        if self.phase is Phase.DONE:
            return []
        self._expect(Phase.STREAMING)
        input_tokens, output_tokens = stream_usage(counts, outcome, self.estimated_input_tokens)
        return self._done(Settle(input_tokens, output_tokens),
                          Record(status, outcome, input_tokens, output_tokens))

    def _done(self, charge: Effect | None, record: Record) -> list[Effect]:
        self.phase = Phase.DONE
        self.recorded = record
        return [record] if charge is None else [charge, record]

    def _expect(self, phase: Phase) -> None:
        if self.phase is not phase:
            raise InvalidTransition(f"expected phase {phase.value}, not {self.phase.value}")
