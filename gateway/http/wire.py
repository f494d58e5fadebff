"""Framework-neutral request and response values passed between the HTTP shell and the surfaces.

The surfaces (compat, policy) never see quart objects; this keeps them testable without a
server and lets the shell change without touching them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import orjson

from gateway.adapters.base import Adapter
from gateway.errors import GatewayError

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream"


@dataclass(frozen=True, slots=True)
class Inbound:
    method: str
    path: str
    #: Lower-cased header names.
    headers: Mapping[str, str]
    body: bytes
    query_string: bytes = b""


@dataclass(slots=True)
class Outbound:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    #: Set for streamed answers: an async iterator of already-encoded frames.
    stream: AsyncIterator[bytes] | None = None

    @classmethod
    def json(cls, status: int, value: object, headers: list[tuple[str, str]] | None = None
             ) -> Outbound:
        out = [(k, v) for k, v in (headers or []) if k.lower() != "content-type"]
        out.append(("content-type", JSON_TYPE))
        return cls(status=status, headers=out, body=orjson.dumps(value))


def error_response(adapter: Adapter, error: GatewayError) -> Outbound:
    """`error` in the adapter's API shape, with its status and any headers it carries."""
    return Outbound.json(error.status, adapter.error_body(error), list(error.headers.items()))


class OwnedStream:
    """An async iterator of encoded frames that owns a resource (the upstream exchange).

    `aclose()` always releases the resource, even when iteration never started: the server
    closes the body iterator when the client goes away, and a plain async generator that was
    never started would not run its cleanup.
    """

    def __init__(self, frames: AsyncIterator[bytes], close: Callable[[], Awaitable[None]]):
        #: Iterated directly by the server (one coroutine layer less per batch); `aclose()`
        #: closes it.
        self.frames = frames
        self._close = close

    def __aiter__(self) -> OwnedStream:
        return self

    async def __anext__(self) -> bytes:
        return await self.frames.__anext__()

    async def aclose(self) -> None:
        try:
            aclose = getattr(self.frames, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            await self._close()
