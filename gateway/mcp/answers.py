"""Reading an upstream MCP server's answer to one request, JSON or SSE, and rewriting the one
response message that answers it while everything else (progress, logging, the server's own
requests) is relayed as it arrives."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson

from gateway.adapters.base import JSON
from gateway.errors import UpstreamUnavailable
from gateway.mcp.relay import body_chunks
from gateway.mcp.settings import McpServer
from gateway.upstream.sse import Frame, MalformedStream, SSEParser

#: Rewrites the response message to the request (a JSON-RPC result or error object).
Rewrite = Callable[[JSON], JSON]
#: Largest JSON answer read whole, to rewrite it.
MAX_JSON_ANSWER = 16 * 1024 * 1024


def is_sse(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").lower().startswith("text/event-stream")


def answers(message: Any, request_id: Any) -> bool:
    return (isinstance(message, dict) and message.get("id") == request_id
            and ("result" in message or "error" in message))


async def rewritten_json(response: httpx.Response, server: McpServer, request_id: Any,
                         rewrite: Rewrite, deadline: float) -> bytes:
    """A JSON answer, read whole, with the response to `request_id` rewritten."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in body_chunks(response, server, deadline):
        size += len(chunk)
        if size > MAX_JSON_ANSWER:
            raise UpstreamUnavailable(f"The MCP server {server.name!r} sent an answer larger "
                                      f"than {MAX_JSON_ANSWER} bytes.")
        chunks.append(chunk)
    try:
        message = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        raise UpstreamUnavailable(f"The MCP server {server.name!r} sent invalid JSON."
                                  ) from None
    return orjson.dumps(rewrite(message) if answers(message, request_id) else message)


async def rewritten_sse(response: httpx.Response, server: McpServer, request_id: Any,
                        rewrite: Rewrite, deadline: float) -> AsyncIterator[bytes]:
    """The SSE answer as it arrives, the frame with the response to `request_id` rewritten."""
    parser = SSEParser()
    try:
        async for chunk in body_chunks(response, server, deadline):
            for frame in parser.feed(chunk):
                yield _rewritten_frame(frame, request_id, rewrite)
    except MalformedStream as exc:
        raise UpstreamUnavailable(f"The MCP server {server.name!r} sent a malformed event "
                                  f"stream: {exc}") from None
    rest = parser.close()
    if rest:
        yield rest + b"\n\n"


def _rewritten_frame(frame: Frame, request_id: Any, rewrite: Rewrite) -> bytes:
    if frame.data is None:
        return frame.raw
    try:
        message = orjson.loads(frame.data)
    except orjson.JSONDecodeError:
        return frame.raw
    if not answers(message, request_id):
        return frame.raw
    # Keep the frame's other fields (`id:` for resumption, `event:`) and replace its data.
    kept = [line for line in frame.raw.split(b"\n") if line and not line.startswith(b"data")]
    return b"\n".join([*kept, b"data: " + orjson.dumps(rewrite(message))]) + b"\n\n"
