"""Serving the echo upstream: routing one HTTP request to its answer (`answer`), and
`EchoTransport`, which serves `answer()` to an `httpx2.AsyncClient` without any network."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2
import orjson
import trio
import trio.lowlevel

from gateway.upstream.echo.replies import (
    COUNT_TOKENS_PATH,
    JSON,
    JSON_TYPE,
    MODELS_PATH,
    PATHS,
    SSE_TYPE,
    Api,
    Reply,
)
from gateway.upstream.echo.wire import (
    chat_completion,
    chat_completion_frames,
    count_tokens,
    error_body,
    message,
    message_frames,
    models_list,
    response,
    response_frames,
)


class BadRequest(ValueError):
    """The request body is not what the provider accepts. Caused by the caller (here: the
    gateway or a test); the message and `param` say what to fix."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


#: Required top-level fields and their types, per endpoint (as the providers require them).
_REQUIRED: Mapping[str, tuple[tuple[str, type], ...]] = {
    "chat": (("model", str), ("messages", list)),
    "messages": (("model", str), ("messages", list), ("max_tokens", int)),
    "responses": (("model", str),),
    "count_tokens": (("model", str), ("messages", list)),
}


def parse_body(endpoint: str, raw: bytes) -> JSON:
    """The request body as a JSON object with the endpoint's required fields, or `BadRequest`."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    for name, kind in _REQUIRED[endpoint]:
        if name not in body:
            raise BadRequest(f"Missing required parameter: '{name}'.", name)
        value = body[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BadRequest(f"Invalid type for '{name}': expected {kind.__name__}.", name)
    return body


# -- routing ----------------------------------------------------------------------------------

ReplyFactory = Callable[[Api, JSON], Reply]


@dataclass(slots=True)
class Answer:
    """One HTTP answer: a JSON `body`, or `frames` for an event stream."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    frames: Iterator[bytes] | None = None


def _json_answer(status: int, value: JSON, request_id: str) -> Answer:
    return Answer(status, [("content-type", JSON_TYPE), ("x-request-id", request_id)],
                  orjson.dumps(value))


def api_for_path(path: str) -> Api:
    """The API whose error shape an answer on `path` uses."""
    return "messages" if path.startswith("/v1/messages") else PATHS.get(path, "chat")


def answer(method: str, path: str, headers: Mapping[str, str], raw: bytes,
           reply_for: ReplyFactory | None = None) -> Answer:
    """Route one request (lower-case `headers`) as the providers would answer it."""
    path = path.split("?", 1)[0].rstrip("/")
    api = api_for_path(path)
    request_id = f"req_{uuid.uuid4().hex[:24]}"
    known = path in PATHS or path in (COUNT_TOKENS_PATH, MODELS_PATH)
    if not known:
        return _json_answer(404, error_body(api, 404, f"Unknown path: {path}"), request_id)
    expected = "GET" if path == MODELS_PATH else "POST"
    if method.upper() != expected:
        return _json_answer(405, error_body(api, 405, f"Use {expected} on {path}."), request_id)
    if path == MODELS_PATH:
        return _json_answer(200, models_list(anthropic="anthropic-version" in headers), request_id)
    endpoint = "count_tokens" if path == COUNT_TOKENS_PATH else api
    try:
        body = parse_body(endpoint, raw)
    except BadRequest as exc:
        return _json_answer(400, error_body(api, 400, exc.message, param=exc.param), request_id)
    if endpoint == "count_tokens":
        return _json_answer(200, count_tokens(body), request_id)
    reply = (reply_for or Reply.for_request)(api, body)
    if body.get("stream") is True:
        frames = {"chat": chat_completion_frames, "messages": message_frames,
                  "responses": response_frames}[api](body, reply)
        return Answer(200, [("content-type", SSE_TYPE), ("cache-control", "no-cache"),
                            ("x-request-id", request_id)], frames=frames)
    value = {"chat": chat_completion, "messages": message, "responses": response}[api](body, reply)
    return _json_answer(200, value, request_id)


class _FrameStream(httpx2.AsyncByteStream):
    """Yields one SSE event per chunk and lets other tasks run in between, like a socket."""

    def __init__(self, frames: Iterator[bytes]):
        self._frames = frames

    async def __aiter__(self) -> Any:
        for frame in self._frames:
            await trio.lowlevel.checkpoint()
            yield frame

    async def aclose(self) -> None:
        close = getattr(self._frames, "close", None)
        if close is not None:
            close()


class EchoTransport(httpx2.AsyncBaseTransport):
    """An in-process upstream for `httpx2.AsyncClient`: no sockets, trio only.

    `reply_for(api, body)` replaces the echo reply (for tests that need chosen text or usage).
    """

    def __init__(self, reply_for: ReplyFactory | None = None):
        self._reply_for = reply_for

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        raw = await request.aread()
        headers = {k.lower(): v for k, v in request.headers.items()}
        result = answer(request.method, request.url.raw_path.decode("ascii"), headers, raw,
                        self._reply_for)
        if result.frames is not None:
            return httpx2.Response(result.status, headers=result.headers,
                                  stream=_FrameStream(result.frames), request=request)
        return httpx2.Response(result.status, headers=result.headers, content=result.body,
                              request=request)
