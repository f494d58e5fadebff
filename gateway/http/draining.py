"""Request-level draining on shutdown: the grace period every stream being relayed gets.

When the serving worker is told to stop (`gateway.serve`), `Draining.begin(grace)` gives every
stream being relayed until `grace` seconds from now; a stream still running then is ended by the
relay with the API's own error frame (`ShuttingDown`, 503) and its event is recorded with outcome
`shutdown`. A whole answer still awaited then gets the same 503 (`cut_at_grace_end`).
"""


from __future__ import annotations

import logging
import math
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing, contextmanager
from typing import Any

import trio

from gateway.errors import ShuttingDown

log = logging.getLogger("gateway.shutdown")





class Draining:
    """The shutdown state of one app: where the streams being relayed register their reads.

    `cut_at` is infinite while serving; `begin(grace)` sets it, and every registered read (and
    every later one) is cancelled at that time. Surfaces read through `next_or_cut`.
    """

    def __init__(self) -> None:
        self.cut_at = math.inf
        self.began_at: float | None = None
        self._reads: set[trio.CancelScope] = set()

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
        log.info("shutting down: %d stream(s) in flight get %.1f s to finish",
                 len(self._reads), grace)

    @contextmanager
    def until_grace_end(self) -> Iterator[trio.CancelScope]:
        """A cancel scope that ends when the grace period does (never, while serving)."""
        scope = trio.CancelScope(deadline=self.cut_at)
        self._reads.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._reads.discard(scope)

    async def next_or_cut(self, frames: Any) -> Any:
        """`await frames.__anext__()`, or `CUT` when the grace period ends first. Raises
        StopAsyncIteration at the end. The cancel lands in the upstream read, never between a
        frame and its delivery, and the generator it ends is not resumed."""
        # `until_grace_end` spelled out: this runs for every batch of every stream, and a
        # generator-based context manager costs more than the read's own bookkeeping.
        scope = trio.CancelScope(deadline=self.cut_at)
        self._reads.add(scope)
        try:
            with scope:
                return await frames.__anext__()
        finally:
            self._reads.discard(scope)
        return CUT


#: Returned by `Draining.next_or_cut` when the stream must end now.
CUT: Any = object()


async def next_frames(draining: Draining | None, frames: Any) -> Any:
    """`next_or_cut` when the request has a `Draining`, a plain read otherwise."""
    if draining is None:
        return await frames.__anext__()
    return await draining.next_or_cut(frames)


@contextmanager
def cut_at_grace_end() -> Iterator[None]:
    """Raise `ShuttingDown` if the block is still waiting for the upstream when the grace period
    after SIGTERM ends: a whole answer that has not come yet gets a 503 instead of a cut
    connection. Outside a request (no `Draining`), it does nothing."""
    from gateway.http.access_log import current_record

    record = current_record()
    draining: Draining | None = record.draining if record is not None else None
    if draining is None:
        yield
        return
    with draining.until_grace_end() as scope:
        yield
    if scope.cancelled_caught:
        raise ShuttingDown("The gateway is shutting down and could not finish this request in "
                           "its grace period; retry the request.")


def request_draining() -> Draining | None:
    """The current request's `Draining` (None outside a request)."""
    from gateway.http.access_log import current_record

    record = current_record()
    return record.draining if record is not None else None


def cut_error() -> ShuttingDown:
    """What ends a stream whose grace period has passed; each surface turns it into its API's
    error frame."""
    return ShuttingDown("The gateway is shutting down and ended this stream; retry the request.")


async def until_cut(frames: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
    """The batches of a relayed stream's `frames` (closed at the end), ended by `ShuttingDown`
    once the grace period after SIGTERM has passed; each surface turns that into its API's
    error frame."""
    draining = request_draining()
    async with aclosing(frames):
        while True:
            try:
                batch = await next_frames(draining, frames)
            except StopAsyncIteration:
                return
            if batch is CUT:
                raise cut_error()
            yield batch


