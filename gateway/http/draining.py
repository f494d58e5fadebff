"""Request-level draining on shutdown: the grace period every stream being relayed gets.

When the serving worker is told to stop (`gateway.serve`), `Draining.begin(grace)` gives every
stream being relayed until `grace` seconds from now; a stream still running then is ended by the
relay with the API's own error frame (`ShuttingDown`, 503) and its event is recorded with outcome
`shutdown`. A whole answer still awaited then gets the same 503 (`cut_at_grace_end`).
"""


from __future__ import annotations

import logging
import math
from types import TracebackType
from typing import Protocol

import trio

from gateway.errors import ShuttingDown

log = logging.getLogger("gateway.shutdown")


class StreamReads(Protocol):
    """A relayed stream as `Draining` sees it: the cancel scope of its latest upstream read
    (None before the first; moving the deadline of one already finished does nothing). The
    stream gives each read a deadline no later than `Draining.cut_at`; `begin` moves the
    deadline of the read in progress."""

    read_scope: trio.CancelScope | None


class Draining:
    """The shutdown state of one app: where the streams being relayed and the whole answers
    awaited register their reads.

    `cut_at` is infinite while serving; `begin(grace)` sets it, and every registered read (and
    every later one) is cancelled at that time. A stream registers once (`streams`) rather than
    once per read: its own read scope carries the cut together with its timeouts.
    """

    def __init__(self) -> None:
        self.cut_at = math.inf
        self.began_at: float | None = None
        self._reads: set[trio.CancelScope] = set()
        #: The streams being relayed; each adds itself when it starts reading and leaves at
        #: its end.
        self.streams: set[StreamReads] = set()

    @property
    def draining(self) -> bool:
        return self.began_at is not None

    def begin(self, grace: float) -> None:
        if self.began_at is not None:
            return
        now = trio.current_time()
        self.began_at = now
        self.cut_at = now + max(grace, 0.0)
        for scope in self._reads:
            scope.deadline = min(scope.deadline, self.cut_at)
        for stream in self.streams:
            if stream.read_scope is not None:
                stream.read_scope.deadline = min(stream.read_scope.deadline, self.cut_at)
        log.info("shutting down: %d stream(s) in flight get %.1f s to finish",
                 len(self._reads) + len(self.streams), grace)

    def register(self, scope: trio.CancelScope) -> None:
        """Cancel `scope` when the grace period ends (it was made with `cut_at` as deadline)."""
        self._reads.add(scope)

    def unregister(self, scope: trio.CancelScope) -> None:
        self._reads.discard(scope)


class cut_at_grace_end:
    """Raise `ShuttingDown` if the block is still waiting for the upstream when the grace period
    after SIGTERM ends: a whole answer that has not come yet gets a 503 instead of a cut
    connection. Outside a request (no `Draining`), it does nothing.

    A class rather than a generator-based context manager: every request waits for its
    upstream's answer in one."""

    __slots__ = ("_draining", "_scope")

    def __init__(self) -> None:
        self._draining = request_draining()
        self._scope: trio.CancelScope | None = None

    def __enter__(self) -> None:
        if self._draining is not None:
            self._scope = trio.CancelScope(deadline=self._draining.cut_at)
            self._draining.register(self._scope)
            self._scope.__enter__()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        scope, draining = self._scope, self._draining
        if scope is None or draining is None:
            return
        try:
            # True only when it caught its own cancellation, which becomes `ShuttingDown`: no
            # other exception is ever swallowed here.
            scope.__exit__(kind, error, traceback)
        finally:
            draining.unregister(scope)
        if scope.cancelled_caught:
            raise ShuttingDown("The gateway is shutting down and could not finish this request "
                               "in its grace period; retry the request.")


def request_draining() -> Draining | None:
    """The current request's `Draining` (None outside a request)."""
    from gateway.http.access_log import current_record

    record = current_record()
    return record.draining if record is not None else None


def cut_error() -> ShuttingDown:
    """What ends a stream whose grace period has passed; each surface turns it into its API's
    error frame."""
    return ShuttingDown("The gateway is shutting down and ended this stream; retry the request.")
