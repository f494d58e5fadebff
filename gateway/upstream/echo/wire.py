"""The echo upstream's answers in each API's exact wire shape: pure functions, `(body, reply) ->
dict` for a JSON answer and `(body, reply) -> Iterator[bytes]` for a stream, one SSE event per
item, and each API's error body."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson

from gateway.upstream.echo.replies import (
    _MODELS_CREATED,
    ECHO_MODELS,
    JSON,
    Api,
    Reply,
    input_tokens,
)


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
    name, server = reply.tool_calls[number][0], reply.mcp_server(number)
    if server is not None:  # run by the provider on the MCP server: its answer is in the item
        item: JSON = {"id": f"mcp_{reply.key}{number}", "type": "mcp_call", "status": status,
                      "server_label": server, "name": name, "arguments": arguments}
        if status == "completed":
            item["output"] = f"{name} done"
        return item
    return {"id": f"fc_{reply.key}{number}", "type": "function_call", "status": status,
            "call_id": reply.call_id(number), "name": name, "arguments": arguments}


def _function_calls(reply: Reply) -> list[JSON]:
    return [_function_call(reply, number, "completed", "".join(arguments))
            for number, (_name, arguments) in enumerate(reply.tool_calls)]


def _function_call_events(reply: Reply) -> Iterator[JSON]:
    for number, (_name, arguments) in enumerate(reply.tool_calls):
        mcp = reply.mcp_server(number) is not None
        kind = "mcp_call" if mcp else "function_call"
        where = {"item_id": f"{'mcp' if mcp else 'fc'}_{reply.key}{number}",
                 "output_index": number + 1}
        yield {"type": "response.output_item.added", "output_index": number + 1,
               "item": _function_call(reply, number, "in_progress", "")}
        for piece in arguments:
            yield {"type": f"response.{kind}_arguments.delta", **where, "delta": piece}
        yield {"type": f"response.{kind}_arguments.done", **where,
               "arguments": "".join(arguments)}
        if mcp:
            yield {"type": "response.mcp_call.completed", **where}
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
