"""Reading an upstream MCP server's answer to one request, JSON or SSE, and rewriting the one
response message that answers it while everything else (progress, logging, the server's own
requests) is relayed as it arrives."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

import httpx2
import orjson

from gateway.adapters.base import JSON
from gateway.errors import UpstreamUnavailable
from gateway.mcp.relay import MAX_READ_BYTES, body_chunks, read_bounded
from gateway.mcp.settings import McpServer
from gateway.upstream.sse import Frame, MalformedStream, SSEParser

#: Rewrites the response message to the request (a JSON-RPC result or error object).
Rewrite = Callable[[JSON], JSON]
#: Rewrites a notification the server sends while it works on the request; None drops it.
Notify = Callable[[JSON], JSON | None]
#: Largest answer a governed route reads whole to rewrite it (a JSON body, or one SSE frame).
MAX_JSON_ANSWER = MAX_READ_BYTES


def is_sse(response: httpx2.Response) -> bool:
    return response.headers.get("content-type", "").lower().startswith("text/event-stream")


def answers(message: Any, request_id: Any) -> bool:
    return (isinstance(message, dict) and message.get("id") == request_id
            and ("result" in message or "error" in message))


async def rewritten_json(response: httpx2.Response, server: McpServer, request_id: Any,
                         rewrite: Rewrite, deadline: float) -> bytes:
    """A JSON answer, read whole, with the response to `request_id` rewritten."""
    try:
        message = orjson.loads(await read_bounded(response, server, deadline))
    except orjson.JSONDecodeError:
        raise UpstreamUnavailable(f"The MCP server {server.name!r} sent invalid JSON."
                                  ) from None
    return orjson.dumps(rewrite(message) if answers(message, request_id) else message)


async def rewritten_sse(response: httpx2.Response, server: McpServer, request_id: Any,
                        rewrite: Rewrite, deadline: float, notify: Notify | None = None
                        ) -> AsyncGenerator[bytes, None]:
    """The SSE answer as it arrives, the frame with the response to `request_id` rewritten,
    and the server's notifications before it passed through `notify`. It ends with the
    response frame: the response is the last message of a request's stream."""
    parser = SSEParser(max_frame_bytes=MAX_JSON_ANSWER)
    try:
        async with aclosing(body_chunks(response, server, deadline)) as chunks:
            async for chunk in chunks:
                for frame in parser.feed(chunk):
                    rewritten, answered = _rewritten_frame(frame, request_id, rewrite, notify)
                    if rewritten:
                        yield rewritten
                    if answered:
                        return
    except MalformedStream as exc:
        raise UpstreamUnavailable(f"The MCP server {server.name!r} sent a malformed event "
                                  f"stream: {exc}") from None
    rest = parser.close()
    if rest:
        yield rest + b"\n\n"


def _rewritten_frame(frame: Frame, request_id: Any, rewrite: Rewrite, notify: Notify | None
                     ) -> tuple[bytes, bool]:
    """(the frame to relay, empty to drop it; whether it is the answer)."""
    if frame.data is None:
        return frame.raw, False
    try:
        message = orjson.loads(frame.data)
    except orjson.JSONDecodeError:
        return frame.raw, False
    if answers(message, request_id):
        return _with_data(frame, rewrite(message)), True
    if notify is not None and isinstance(message, dict) and "method" in message and (
            "id" not in message):
        notified = notify(message)
        if notified is None:
            return b"", False
        if notified is not message:
            return _with_data(frame, notified), False
    return frame.raw, False


def _with_data(frame: Frame, message: JSON) -> bytes:
    """The frame with `message` as its data, its other fields (`id:` for resumption,
    `event:`) kept."""
    kept = [line for line in frame.raw.split(b"\n") if line and not line.startswith(b"data")]
    return b"\n".join([*kept, b"data: " + orjson.dumps(message)]) + b"\n\n"
