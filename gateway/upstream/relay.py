"""The one relay: an upstream exchange in, the client's answer out, for both surfaces.

`open_answer` waits for the upstream's response head, `read_answer` reads a whole body, and
`stream_answer` relays an event stream frame by frame through a `FrameTransform`: `/v1` passes
`PassThrough` (the upstream's bytes, untouched), `/policy` passes its stream governor. The relay
writes the endings once for both: the API's error frame when the upstream fails or the shutdown
grace period ends, and exactly one call of `on_done` with how the stream ended, whether it
completed, failed, was stopped by a rule or lost its client.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol

import httpx2
import trio

from gateway.adapters.base import Adapter
from gateway.errors import GatewayError, ShuttingDown, UpstreamError
from gateway.http.draining import request_draining
from gateway.http.wire import OwnedStream
from gateway.upstream.exchange import Exchange
from gateway.upstream.sse import Frame

log = logging.getLogger("gateway.relay")

COMPLETED = "completed"
REFUSED = "refused"
CLIENT_DISCONNECTED = "client_disconnected"


class FrameTransform(Protocol):
    """What a surface does to each relayed frame (sans-I/O). A transform may also have
    `async checkpoint(final=False) -> bytes`, awaited after each batch and once before
    `finish()` (an external classifier's window check, gateway/moderation/stream_windows.py);
    the bytes it returns go to the client: frames it held until their window's verdict, or the
    stream's ending when it set `stopped`."""

    @property
    def stopped(self) -> bool:
        """True once the transform ended the stream itself (an output rule stopped it)."""

    def feed(self, frame: Frame, payload: dict[str, Any] | None) -> bytes:
        """The bytes the client gets for one upstream frame (possibly none)."""

    def finish(self) -> bytes:
        """The bytes the client gets after the upstream's last frame."""

    def error_extra(self) -> Mapping[str, Any] | None:
        """Fields added to an error frame that ends the stream."""


class PassThrough:
    """The `/v1` transform: every frame exactly as the upstream sent it."""

    stopped = False

    def feed(self, frame: Frame, payload: dict[str, Any] | None) -> bytes:
        return frame.raw

    def finish(self) -> bytes:
        return b""

    def error_extra(self) -> Mapping[str, Any] | None:
        return None


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """How a relayed stream ended: `outcome` as events name it, `status` as the log does."""

    outcome: str
    status: int


OnDone = Callable[[StreamEnd], Awaitable[None]]


async def open_answer(exchange: Exchange) -> httpx2.Response:
    """Send the request and wait for the upstream's response head. A whole answer still awaited
    when the shutdown grace period ends raises `ShuttingDown`. On any failure the exchange is
    closed before the error propagates."""
    try:
        return await exchange.start(request_draining())
    except BaseException:
        await exchange.aclose()
        raise


async def read_answer(exchange: Exchange) -> bytes:
    """The whole body of a started exchange; the exchange is closed afterwards, always."""
    try:
        return await exchange.read_body()
    finally:
        await exchange.aclose()


def stream_answer(exchange: Exchange, adapter: Adapter, transform: FrameTransform,
                  on_done: OnDone) -> OwnedStream:
    """The client's stream for a started exchange. It owns the exchange: closing it (the server
    does when the client leaves, even before the first frame) closes the upstream response,
    and `on_done` runs exactly once however the stream ends."""
    done = False

    async def finish(end: StreamEnd) -> None:
        nonlocal done
        if not done:
            done = True
            with trio.CancelScope(shield=True):
                await on_done(end)

    async def close() -> None:
        await exchange.aclose()
        await finish(StreamEnd(CLIENT_DISCONNECTED, 499))

    return OwnedStream(_frames(exchange, adapter, transform, finish), close)


async def _frames(exchange: Exchange, adapter: Adapter, transform: FrameTransform,
                  finish: OnDone) -> AsyncIterator[bytes]:
    end = StreamEnd(COMPLETED, 200)
    checkpoint = getattr(transform, "checkpoint", None)
    try:
        # The exchange's reads carry the shutdown cut themselves (`ShuttingDown`).
        async with aclosing(exchange.frames(adapter, request_draining())) as batches:
            async for batch in batches:
                out = b"".join([transform.feed(frame, payload) for frame, payload in batch])
                if checkpoint is not None:  # an external classifier's window, when one is due
                    out += await checkpoint()
                if out:
                    yield out
                if transform.stopped:
                    end = StreamEnd(REFUSED, 200)
                    return
        if checkpoint is not None:
            stop = await checkpoint(final=True)
            if stop:
                yield stop
            if transform.stopped:
                end = StreamEnd(REFUSED, 200)
                return
        tail = transform.finish()
        if transform.stopped:
            end = StreamEnd(REFUSED, 200)
        if tail:
            yield tail
    except (UpstreamError, ShuttingDown) as error:
        end = StreamEnd("shutdown" if isinstance(error, ShuttingDown) else "upstream_error",
                        error.status)
        yield adapter.stream_error_frame(error, transform.error_extra())
    except (trio.Cancelled, GeneratorExit):
        # Cancelled: the client left while we waited for the upstream. GeneratorExit: the
        # server closed the stream while it waited to send (the client left then).
        end = StreamEnd(CLIENT_DISCONNECTED, 499)
        raise
    except Exception:
        end = StreamEnd("internal_error", 500)
        log.exception("relayed stream failed")
        yield adapter.stream_error_frame(
            GatewayError("The gateway failed while streaming."), transform.error_extra())
    finally:
        await finish(end)
