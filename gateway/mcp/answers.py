"""Reading an upstream MCP server's answer to one request, JSON or SSE, and rewriting the one
response message that answers it while everything else (progress, logging, the server's own
requests) is relayed as it arrives."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

import httpx2
import orjson

from gateway.adapters.base import JSON
from gateway.errors import GatewayError, UpstreamUnavailable
from gateway.mcp.relay import MAX_READ_BYTES, body_chunks, read_bounded
from gateway.mcp.settings import McpServer
from gateway.policy.json_strings import MAX_JSON_DEPTH, json_depth
from gateway.upstream.sse import Frame, MalformedStream, SSEParser

log = logging.getLogger("gateway")
#: Rewrites the response message to the request (a JSON-RPC result or error object).
Rewrite = Callable[[JSON], JSON]
#: Rewrites a notification the server sends while it works on the request; None drops it.
Notify = Callable[[JSON], JSON | None]
#: Largest answer a governed route reads whole to rewrite it (a JSON body, or one SSE frame).
MAX_JSON_ANSWER = MAX_READ_BYTES


def is_sse(response: httpx2.Response) -> bool:
    return response.headers.get("content-type", "").lower().startswith("text/event-stream")


def _is_response(message: Any) -> bool:
    return isinstance(message, dict) and "method" not in message and (
        "result" in message or "error" in message)


def _decoded(data: bytes | str, server: McpServer) -> Any:
    """A message of the server's, or the upstream error for what does not decode."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamUnavailable(f"The MCP server {server.name!r} sent a message that is not "
                                  f"valid JSON.") from None
    if json_depth(message) > MAX_JSON_DEPTH:
        raise UpstreamUnavailable(f"The MCP server {server.name!r} sent a message nested more "
                                  f"than {MAX_JSON_DEPTH} levels deep.")
    return message


def _answer(message: Any, request_id: str, client_id: Any, server: McpServer,
            rewrite: Rewrite) -> JSON | None:
    """The rewritten response to the request, with the client's id; None for a message that
    is no response. A response to anything else is never relayed: it would pass unread."""
    if not _is_response(message):
        return None
    if message.get("id") != request_id:
        raise UpstreamUnavailable(f"The MCP server {server.name!r} answered a request it was "
                                  f"not sent.")
    return {**rewrite(message), "id": client_id}


async def rewritten_json(response: httpx2.Response, server: McpServer, request_id: str,
                         client_id: Any, rewrite: Rewrite, deadline: float) -> bytes:
    """A JSON answer, read whole: the response to `request_id` rewritten, with the client's
    id; anything else is the upstream's error."""
    message = _decoded(await read_bounded(response, server, deadline), server)
    answer = _answer(message, request_id, client_id, server, rewrite)
    if answer is None:
        raise UpstreamUnavailable(f"The MCP server {server.name!r} did not answer with a "
                                  f"JSON-RPC response.")
    return orjson.dumps(answer)


async def rewritten_sse(response: httpx2.Response, server: McpServer, request_id: str,
                        client_id: Any, rewrite: Rewrite, deadline: float,
                        notify: Notify | None = None) -> AsyncGenerator[bytes, None]:
    """The SSE answer as it arrives, the frame with the response to `request_id` rewritten
    (with the client's id), and the server's notifications before it passed through `notify`.
    It ends with the response frame: the response is the last message of a request's stream
    (a stream that ends before it is the upstream's error).

    Every message goes out as the gateway read it, encoded again, so that no client reads a
    frame differently; an unfinished frame at the end of the stream is dropped."""
    parser = SSEParser(max_frame_bytes=MAX_JSON_ANSWER)
    try:
        async with aclosing(body_chunks(response, server, deadline)) as chunks:
            async for chunk in chunks:
                for frame in parser.feed(chunk):
                    answer = None
                    if frame.data:  # a frame without data (a priming event) carries no message
                        message = _decoded(frame.data, server)
                        answer = _answer(message, request_id, client_id, server, rewrite)
                        relayed = _relayed(message, server, notify) if answer is None else answer
                        out = _with_data(frame, relayed) if relayed is not None else b""
                    else:
                        out = _with_data(frame, None)
                    if out:
                        yield out
                    if answer is not None:
                        return
    except MalformedStream as exc:
        raise UpstreamUnavailable(f"The MCP server {server.name!r} sent a malformed event "
                                  f"stream: {exc}") from None
    raise UpstreamUnavailable(f"The MCP server {server.name!r} ended its stream without "
                              f"answering.")


async def server_stream(response: httpx2.Response, server: McpServer
                        ) -> AsyncGenerator[bytes, None]:
    """The server's own stream (GET) on the governed route: its requests and notifications,
    each as the gateway read it. A response never comes on this stream (it could answer a call
    past the output rules), so one, or a frame that does not decode, ends it."""
    parser = SSEParser(max_frame_bytes=MAX_JSON_ANSWER)
    try:
        async with aclosing(body_chunks(response, server, None)) as chunks:
            async for chunk in chunks:
                for frame in parser.feed(chunk):
                    message = _decoded(frame.data, server) if frame.data else None
                    out = _with_data(frame, None if message is None
                                     else _relayed(message, server, None))
                    if out:
                        yield out
    except (GatewayError, MalformedStream) as exc:
        log.warning("ended the stream of MCP server %s: %s", server.name, exc)


def _relayed(message: Any, server: McpServer, notify: Notify | None) -> JSON | None:
    """A notification (after `notify`; None drops it) or a request of the server's."""
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        raise UpstreamUnavailable(f"The MCP server {server.name!r} sent a message that is not "
                                  f"JSON-RPC.")
    if notify is not None and "id" not in message:
        return notify(message)
    return message


#: The fields of a frame relayed besides its data: the `id:` a client resumes from, the
#: `event:` type, the `retry:` delay.
KEPT_FIELDS = (b"id", b"event", b"retry")


def _with_data(frame: Frame, message: JSON | None) -> bytes:
    """The frame with `message` as its data (none: only its other fields; nothing if it has
    none)."""
    lines = frame.raw.split(b"\n")
    kept = [line for line in lines if line.partition(b":")[0] in KEPT_FIELDS]
    if message is not None:
        kept.append(b"data: " + orjson.dumps(message))
    elif not kept and any(line.startswith(b":") for line in lines):
        kept.append(b":")  # a keep-alive comment stays one, without its text
    return b"\n".join(kept) + b"\n\n" if kept else b""
