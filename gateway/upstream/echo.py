"""The built-in echo upstream: exact OpenAI and Anthropic wire answers without any network.

It answers like the real providers do, byte for byte in shape, so that everything the gateway
does to a provider answer (relaying, injecting `policy`, counting usage) is exercised by the
official SDKs even when no provider key is configured. The reply to a request is
``"echo: " + <last user text>`` (cut to `MAX_ECHO_CHARS`), streamed in a few chunks.

Token counts are an estimate, not a tokenizer: ``ceil(len(text) / 4)`` per text, summed over
every text the request carries (`estimate_tokens`, `input_texts`). The output count is the same
estimate over the reply text. Usage is deterministic, so quota tests can predict it.

The formatting functions are pure: `(body, reply) -> dict` for a JSON answer and
`(body, reply) -> Iterator[bytes]` for a stream, one SSE event per item. `answer()` routes one
HTTP request to them; `EchoTransport` serves `answer()` to an `httpx.AsyncClient`.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import orjson
import trio
import trio.lowlevel

Api = Literal["chat", "messages", "responses"]
JSON = dict[str, Any]

MAX_ECHO_CHARS = 400
STREAM_CHUNKS = 4
ECHO_MODELS = ("echo",)
#: Fixed so that the model list is identical on every call.
_MODELS_CREATED = 1_735_689_600  # 2025-01-01T00:00:00Z

PATHS: Mapping[str, Api] = {
    "/v1/chat/completions": "chat",
    "/v1/messages": "messages",
    "/v1/responses": "responses",
}
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
MODELS_PATH = "/v1/models"

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream; charset=utf-8"


# -- text and token estimates -------------------------------------------------------------------

def estimate_tokens(text: str) -> int:
    """About four characters per token, rounded up; 0 for the empty text."""
    return math.ceil(len(text) / 4)


def _texts(value: Any) -> list[str]:
    """Every text inside a content value: a string, a list of parts/blocks, or a message.

    Parts carry text in `text`; messages and tool results in `content`; Responses tool outputs
    in `output`. Images, tool-call arguments and other non-text data are not counted.
    """
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for item in value for text in _texts(item)]
    if isinstance(value, dict):
        return [text for key in ("text", "content", "output") if key in value
                for text in _texts(value[key])]
    return []


def input_texts(api: Api, body: Mapping[str, Any]) -> list[str]:
    """The texts whose estimates make up the input token count of a request."""
    if api == "chat":
        return _texts(body.get("messages"))
    if api == "messages":
        return _texts(body.get("system")) + _texts(body.get("messages"))
    return _texts(body.get("instructions")) + _texts(body.get("input"))


def input_tokens(api: Api, body: Mapping[str, Any]) -> int:
    return sum(estimate_tokens(text) for text in input_texts(api, body))


def last_user_text(api: Api, body: Mapping[str, Any]) -> str:
    """The text of the last user message, its parts joined by a space ("" when there is none)."""
    if api == "responses":
        items = body.get("input")
        if isinstance(items, str):
            return items
    else:
        items = body.get("messages")
    if not isinstance(items, list):
        return ""
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user":
            return " ".join(_texts(item.get("content")))
    return ""


def split_text(text: str, parts: int = STREAM_CHUNKS) -> list[str]:
    """`text` cut into at most `parts` non-empty slices of about equal length.

    Cuts fall anywhere, also inside words, as real model tokens do; that is what makes a policy
    term split across two frames possible.
    """
    if not text:
        return []
    size = math.ceil(len(text) / parts)
    return [text[start : start + size] for start in range(0, len(text), size)]


# -- the reply ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Reply:
    """What the upstream answers: the text as streamed chunks, the usage, and stable ids."""

    chunks: tuple[str, ...]
    input_tokens: int
    output_tokens: int
    #: Hex digits shared by every id of this answer (`chatcmpl-…`, `msg_…`, `resp_…`).
    key: str
    created: int
    #: Tool calls the answer makes after its text: (name, arguments as streamed chunks).
    tool_calls: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @classmethod
    def for_request(
        cls,
        api: Api,
        body: Mapping[str, Any],
        *,
        text: str | None = None,
        chunks: Sequence[str] | None = None,
        usage: Mapping[str, int] | None = None,
        created: int | None = None,
        tool_calls: Sequence[Mapping[str, Any]] = (),
    ) -> Reply:
        """The reply to `body`: explicit `chunks`, else `text`, else the echo of the last user text.

        `usage` overrides the estimates; it takes `input_tokens`/`output_tokens` or the chat
        names `prompt_tokens`/`completion_tokens`. `tool_calls` are `{"name", "arguments"}`
        objects, the arguments a list of the chunks they stream in (JSON text once joined).
        """
        if chunks is None:
            if text is None:
                text = ("echo: " + last_user_text(api, body))[:MAX_ECHO_CHARS]
            chunks = split_text(text)
        chunks = tuple(chunks)
        usage = usage or {}
        reply_text = "".join(chunks)
        n_in = usage.get("input_tokens", usage.get("prompt_tokens", input_tokens(api, body)))
        n_out = usage.get("output_tokens",
                          usage.get("completion_tokens", estimate_tokens(reply_text)))
        calls = tuple((str(call["name"]), tuple(call["arguments"])) for call in tool_calls)
        return cls(chunks=chunks, input_tokens=n_in, output_tokens=n_out, key=uuid.uuid4().hex[:24],
                   created=int(time.time()) if created is None else created, tool_calls=calls)

    def call_id(self, number: int) -> str:
        return f"call_{self.key[:16]}{number}"


def sse(payload: JSON, event: str | None = None) -> bytes:
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


# -- OpenAI chat completions --------------------------------------------------------------------

def _chat_usage(reply: Reply) -> JSON:
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.total_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }


def chat_completion(body: Mapping[str, Any], reply: Reply) -> JSON:
    return {
        "id": f"chatcmpl-{reply.key}",
        "object": "chat.completion",
        "created": reply.created,
        "model": body.get("model"),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply.text, "refusal": None,
                        "annotations": [], **_chat_tool_calls(reply)},
            "logprobs": None,
            "finish_reason": "tool_calls" if reply.tool_calls else "stop",
        }],
        "usage": _chat_usage(reply),
        "service_tier": "default",
        "system_fingerprint": None,
    }


def _chat_tool_calls(reply: Reply) -> JSON:
    if not reply.tool_calls:
        return {}
    return {"tool_calls": [
        {"id": reply.call_id(number), "type": "function",
         "function": {"name": name, "arguments": "".join(arguments)}}
        for number, (name, arguments) in enumerate(reply.tool_calls)]}


def wants_stream_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def chat_completion_frames(body: Mapping[str, Any], reply: Reply) -> Iterator[bytes]:
    """`data:` frames as OpenAI sends them: a role chunk, content chunks, a `stop` chunk, the
    usage chunk (empty `choices`) only if `stream_options.include_usage`, then `[DONE]`."""
    include_usage = wants_stream_usage(body)
    base: JSON = {"id": f"chatcmpl-{reply.key}", "object": "chat.completion.chunk",
                  "created": reply.created, "model": body.get("model"),
                  "service_tier": "default", "system_fingerprint": None}
    if include_usage:
        # OpenAI sends `"usage": null` on every chunk once usage was asked for.
        base["usage"] = None

    def chunk(delta: JSON, finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return sse({**base, "choices": [choice]})

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for text in reply.chunks:
        yield chunk({"content": text})
    for number, (name, arguments) in enumerate(reply.tool_calls):
        yield chunk({"tool_calls": [{"index": number, "id": reply.call_id(number),
                                     "type": "function",
                                     "function": {"name": name, "arguments": ""}}]})
        for piece in arguments:
            yield chunk({"tool_calls": [{"index": number, "function": {"arguments": piece}}]})
    yield chunk({}, "tool_calls" if reply.tool_calls else "stop")
    if include_usage:
        yield sse({**base, "choices": [], "usage": _chat_usage(reply)})
    yield b"data: [DONE]\n\n"


# -- Anthropic messages -------------------------------------------------------------------------

def _message_usage(input_tokens: int, output_tokens: int) -> JSON:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "service_tier": "standard"}


def message(body: Mapping[str, Any], reply: Reply) -> JSON:
    return {
        "id": f"msg_{reply.key}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": [{"type": "text", "text": reply.text}, *(
            {"type": "tool_use", "id": reply.call_id(number), "name": name,
             "input": _arguments_object(arguments)}
            for number, (name, arguments) in enumerate(reply.tool_calls))],
        "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
        "stop_sequence": None,
        "usage": _message_usage(reply.input_tokens, reply.output_tokens),
    }


def _arguments_object(arguments: Sequence[str]) -> Any:
    """A tool call's streamed arguments as the JSON value they spell ({} if they do not)."""
    try:
        return orjson.loads("".join(arguments))
    except orjson.JSONDecodeError:
        return {}


def message_frames(body: Mapping[str, Any], reply: Reply) -> Iterator[bytes]:
    """Events in Anthropic's order: message_start, content_block_start, ping,
    content_block_delta..., content_block_stop, message_delta, message_stop."""
    start = message(body, reply)
    start.update(content=[], stop_reason=None)
    # Anthropic reports a token or so at the start; the final count comes in message_delta.
    start["usage"] = _message_usage(reply.input_tokens, min(1, reply.output_tokens))
    yield sse({"type": "message_start", "message": start}, "message_start")
    yield sse({"type": "content_block_start", "index": 0,
               "content_block": {"type": "text", "text": ""}}, "content_block_start")
    yield sse({"type": "ping"}, "ping")
    for text in reply.chunks:
        yield sse({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": text}}, "content_block_delta")
    yield sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    for number, (name, arguments) in enumerate(reply.tool_calls, start=1):
        yield sse({"type": "content_block_start", "index": number, "content_block": {
            "type": "tool_use", "id": reply.call_id(number), "name": name, "input": {}}},
            "content_block_start")
        for piece in arguments:
            yield sse({"type": "content_block_delta", "index": number,
                       "delta": {"type": "input_json_delta", "partial_json": piece}},
                      "content_block_delta")
        yield sse({"type": "content_block_stop", "index": number}, "content_block_stop")
    stop_reason = "tool_use" if reply.tool_calls else "end_turn"
    yield sse({"type": "message_delta",
               "delta": {"stop_reason": stop_reason, "stop_sequence": None},
               "usage": {"output_tokens": reply.output_tokens}}, "message_delta")
    yield sse({"type": "message_stop"}, "message_stop")


def count_tokens(body: Mapping[str, Any]) -> JSON:
    return {"input_tokens": input_tokens("messages", body)}


# -- OpenAI responses ---------------------------------------------------------------------------

def _output_text(text: str) -> JSON:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _output_message(reply: Reply, status: str, content: list[JSON]) -> JSON:
    return {"id": f"msg_{reply.key}", "type": "message", "status": status, "role": "assistant",
            "content": content}


def _function_call(reply: Reply, number: int, status: str, arguments: str) -> JSON:
    name = reply.tool_calls[number][0]
    return {"id": f"fc_{reply.key}{number}", "type": "function_call", "status": status,
            "call_id": reply.call_id(number), "name": name, "arguments": arguments}


def _function_calls(reply: Reply) -> list[JSON]:
    return [_function_call(reply, number, "completed", "".join(arguments))
            for number, (_name, arguments) in enumerate(reply.tool_calls)]


def _function_call_events(reply: Reply) -> Iterator[JSON]:
    for number, (_name, arguments) in enumerate(reply.tool_calls):
        where = {"item_id": f"fc_{reply.key}{number}", "output_index": number + 1}
        yield {"type": "response.output_item.added", "output_index": number + 1,
               "item": _function_call(reply, number, "in_progress", "")}
        for piece in arguments:
            yield {"type": "response.function_call_arguments.delta", **where, "delta": piece}
        yield {"type": "response.function_call_arguments.done", **where,
               "arguments": "".join(arguments)}
        yield {"type": "response.output_item.done", "output_index": number + 1,
               "item": _function_call(reply, number, "completed", "".join(arguments))}


def response(body: Mapping[str, Any], reply: Reply, *, status: str = "completed") -> JSON:
    """The `response` object; with `status="in_progress"` as sent before any output."""
    done = status == "completed"
    instructions = body.get("instructions")
    return {
        "id": f"resp_{reply.key}",
        "object": "response",
        "created_at": reply.created,
        "status": status,
        "background": False,
        "completed_at": reply.created if done else None,
        "error": None,
        "incomplete_details": None,
        "instructions": instructions if isinstance(instructions, str) else None,
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": body.get("model"),
        "output": [_output_message(reply, "completed", [_output_text(reply.text)]),
                   *_function_calls(reply)] if done else [],
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": 0,
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": {
            "input_tokens": reply.input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": reply.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": reply.total_tokens,
        } if done else None,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def response_frames(body: Mapping[str, Any], reply: Reply) -> Iterator[bytes]:
    """Responses events with their `sequence_number`, from response.created to
    response.completed, one output message with one output_text part."""
    item_id = f"msg_{reply.key}"
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    events: list[JSON] = [
        {"type": "response.created", "response": response(body, reply, status="in_progress")},
        {"type": "response.in_progress", "response": response(body, reply, status="in_progress")},
        {"type": "response.output_item.added", "output_index": 0,
         "item": _output_message(reply, "in_progress", [])},
        {"type": "response.content_part.added", **where, "part": _output_text("")},
        *({"type": "response.output_text.delta", **where, "delta": text, "logprobs": []}
          for text in reply.chunks),
        {"type": "response.output_text.done", **where, "text": reply.text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": _output_text(reply.text)},
        {"type": "response.output_item.done", "output_index": 0,
         "item": _output_message(reply, "completed", [_output_text(reply.text)])},
        *_function_call_events(reply),
        {"type": "response.completed", "response": response(body, reply)},
    ]
    for number, event in enumerate(events):
        yield sse({**event, "sequence_number": number}, event["type"])


# -- models ---------------------------------------------------------------------------------------

def models_list(*, anthropic: bool = False) -> JSON:
    """`GET /v1/models` in OpenAI's shape, or Anthropic's when `anthropic` is true."""
    if anthropic:
        data = [{"type": "model", "id": name, "display_name": name.title(),
                 "created_at": "2025-01-01T00:00:00Z", "lifecycle": "active"}
                for name in ECHO_MODELS]
        return {"data": data, "has_more": False, "first_id": ECHO_MODELS[0],
                "last_id": ECHO_MODELS[-1]}
    return {"object": "list", "data": [
        {"id": name, "object": "model", "created": _MODELS_CREATED, "owned_by": "policy-gateway"}
        for name in ECHO_MODELS]}


# -- errors ---------------------------------------------------------------------------------------

_OPENAI_ERRORS = {401: ("invalid_request_error", "invalid_api_key"),
                  429: ("requests", "rate_limit_exceeded")}
_ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error",
                     403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                     429: "rate_limit_error", 529: "overloaded_error"}


def error_body(api: Api, status: int, message: str | None = None, *,
               param: str | None = None) -> JSON:
    """The provider's own error body for `status`: OpenAI's `{"error": {...}}` or Anthropic's
    `{"type": "error", "error": {...}}`."""
    message = message or f"The upstream answered {status}."
    client_fault = status < 500
    if api == "messages":
        default = "invalid_request_error" if client_fault else "api_error"
        kind = _ANTHROPIC_ERRORS.get(status, default)
        return {"type": "error", "error": {"type": kind, "message": message}}
    fallback = ("invalid_request_error" if client_fault else "server_error", None)
    kind, code = _OPENAI_ERRORS.get(status, fallback)
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


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


class _FrameStream(httpx.AsyncByteStream):
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


class EchoTransport(httpx.AsyncBaseTransport):
    """An in-process upstream for `httpx.AsyncClient`: no sockets, trio only.

    `reply_for(api, body)` replaces the echo reply (for tests that need chosen text or usage).
    """

    def __init__(self, reply_for: ReplyFactory | None = None):
        self._reply_for = reply_for

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raw = await request.aread()
        headers = {k.lower(): v for k, v in request.headers.items()}
        result = answer(request.method, request.url.raw_path.decode("ascii"), headers, raw,
                        self._reply_for)
        if result.frames is not None:
            return httpx.Response(result.status, headers=result.headers,
                                  stream=_FrameStream(result.frames), request=request)
        return httpx.Response(result.status, headers=result.headers, content=result.body,
                              request=request)
