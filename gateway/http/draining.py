"""Request-level draining on shutdown: the grace period every stream being relayed gets.

When the serving worker is told to stop (`gateway.serve`), `Draining.begin(grace)` gives every
stream being relayed until `grace` seconds from now; a stream still running then is ended by the
relay with the API's own error frame (`ShuttingDown`, 503) and its event is recorded with outcome
`shutdown`. A whole answer still awaited then gets the same 503 (`Exchange.start` and
`Exchange.read_body` in gateway/upstream/exchange.py).
"""


from __future__ import annotations

import logging
import math
from typing import Protocol

import trio

from gateway.errors import ShuttingDown

log = logging.getLogger("gateway.shutdown")


class ExchangeReads(Protocol):
    """An upstream exchange as `Draining` sees it: the cancel scope of its latest upstream
    read (None before the first; moving the deadline of one already finished does nothing).
    The exchange gives each read, the wait for the answer's head included, a deadline no later
    than `Draining.cut_at`; `begin` moves the deadline of the read in progress."""

    read_scope: trio.CancelScope | None


class Draining:
    """The shutdown state of one app: where the upstream exchanges in progress (streams being
    relayed, whole answers awaited) register.

    `cut_at` is infinite while serving; `begin(grace)` sets it, and every read in progress (and
    every later one) is cancelled at that time. An exchange registers once (`streams`) rather
    than once per read: its own read scope carries the cut together with its timeouts.
    """

    def __init__(self) -> None:
        self.cut_at = math.inf
        self.began_at: float | None = None
        #: The exchanges in progress; each adds itself when it sends its request and leaves
        #: when it is closed.
        self.exchanges: set[ExchangeReads] = set()

    @property
    def draining(self) -> bool:
        return self.began_at is not None

    def begin(self, grace: float) -> None:
        if self.began_at is not None:
            return
        now = trio.current_time()
        self.began_at = now
        self.cut_at = now + max(grace, 0.0)
        for exchange in self.exchanges:
            if exchange.read_scope is not None:
                exchange.read_scope.deadline = min(exchange.read_scope.deadline, self.cut_at)
        log.info("shutting down: %d upstream call(s) in flight get %.1f s to finish",
                 len(self.exchanges), grace)


def request_draining() -> Draining | None:
    """The current request's `Draining` (None outside a request)."""
    from gateway.http.access_log import current_record

    record = current_record()
    return record.draining if record is not None else None


def cut_error() -> ShuttingDown:
    """What ends a stream whose grace period has passed; each surface turns it into its API's
    error frame."""
    return ShuttingDown("The gateway is shutting down and ended this stream; retry the request.")
