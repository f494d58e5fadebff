"""Anthropic messages: `POST /v1/messages` and `POST /v1/messages/count_tokens`.

Texts a policy reads: every string of the request except those on `INPUT.exclusions` (see
`gateway.adapters.inventory`): `system` in every form, and the content of every message: text,
`tool_use` inputs (every string in them), tool results, documents (text sources, content
sources, titles and context), search results, thinking, citations; tool names, descriptions
and input schemas; and any field the API adds later.

Texts a policy reads in the answer (output): text blocks, the input of `tool_use` blocks (as
JSON text), and thinking; on a stream, `text_delta`, `input_json_delta` and `thinking_delta`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.adapters.base import (
    JSON,
    Adapter,
    CallFn,
    InputView,
    NamedCall,
    OutputDelta,
    RemoveFn,
    Usage,
    check_field,
    check_list_of_objects,
    dumps,
    encode_frame,
)
from gateway.adapters.inventory import TextInventory
from gateway.adapters.reading import (
    TextFn,
    dicts,
    event_name,
    int_or_none,
    key_part,
    make_input_view,
    new_id,
    non_empty_list,
    str_or,
    tool_arguments_texts,
    usage_from,
)
from gateway.adapters.tool_calls import (
    messages_map_calls,
    messages_map_stream_calls,
    messages_stream_names,
    messages_without_tools,
)
from gateway.config import ANTHROPIC
from gateway.errors import GatewayError, InvalidRequest
from gateway.upstream.sse import Frame

#: Strings of a request the model does not read as text, each with the reason.
INPUT = TextInventory({
    "*.type": "enum: the kind of a block or source",
    "*.role": "enum: the author of a message",
    "*.id": "identifier of a tool use",
    "*.tool_use_id": "identifier of the tool use a result answers",
    "*.tool_id": "identifier of the tool that called",
    "*.file_id": "identifier of an uploaded file",
    "*.media_type": "enum: MIME type of a source",
    "*.signature": "cryptographic signature of a thinking block",
    "*.data@base64|redacted_thinking": "base64 bytes of an image or PDF, or encrypted thinking",
    "*.url@url": "the address of an image or document the provider fetches",
    "*.encrypted_index": "encrypted citation pointer",
    "*.encrypted_content": "encrypted search result",
    "*.encrypted_stdout": "encrypted tool output",
    "model": "routing: which model answers, not text it reads",
    "metadata": "request metadata (an end-user id), not sent to the model",
    "stop_sequences": "stop sequences end the output; the model does not read them",
    "service_tier": "enum: processing tier",
    "container": "identifier and skill ids of a code execution container",
    "inference_geo": "enum: where inference runs",
    "user_profile_id": "identifier of a user profile",
    "workspace_id": "identifier of a workspace",
    "diagnostics": "identifiers for provider diagnostics",
    "mcp_servers": "addresses and credentials of MCP servers",
}, free_form=(
    "messages.content.input", "tools.input_schema", "tools.input_examples",
    "output_config.format.schema", "output_format.schema",
))
_MESSAGES = INPUT.node("messages")
#: A tool call's input in an answer: free-form JSON, every string value of it redacted.
_TOOL_INPUT = TextInventory({})
#: `system` is read first (the selectors need it apart), then messages, then the rest.
_READ_FIRST = frozenset({"system", "messages"})


class Messages(Adapter):
    surface = "messages"
    provider_kind = ANTHROPIC
    upstream_path = "/v1/messages"
    path = "/messages"
    api = "messages"

    def validate(self, body: JSON) -> None:
        check_field(body, "model", str, required=True, non_empty=True)
        check_field(body, "messages", list, required=True)
        check_list_of_objects(body, "messages")
        for index, message in enumerate(body["messages"]):
            if not isinstance(message.get("role"), str):
                raise InvalidRequest(
                    f"messages.{index}.role: Field required", param=f"messages.{index}.role"
                )
            if not isinstance(message.get("content"), str | list):
                raise InvalidRequest(
                    f"messages.{index}.content: expected a string or a list of content blocks",
                    param=f"messages.{index}.content",
                )
        check_field(body, "max_tokens", int, required=True)
        check_field(body, "system", str, list)
        check_field(body, "stream", bool)
        check_field(body, "tools", list)

    def error_body(self, error: GatewayError) -> JSON:
        # `details.error_code` is where the Anthropic SDKs read a stable cause from
        # (`APIStatusError.error_code`); `code` repeats it in the gateway's own place
        # (docs/reference.md).
        body: JSON = {
            "type": "error",
            "error": {"type": error.anthropic_type, "message": error.message, "code": error.code,
                      "details": {"error_code": error.code}},
        }
        body.update(error.extra)
        return body

    def stream_error_frame(self, error: GatewayError, extra: Mapping[str, Any] | None = None
                           ) -> bytes:
        body = self.error_body(error)
        if extra:
            body.update(extra)
        return encode_frame(dumps(body), event="error")

    def is_terminal(self, frame: Frame) -> bool:
        return frame.event in ("message_stop", "error")

    # --- the governed surface

    input_inventory = INPUT

    def input_view(self, body: JSON) -> InputView:
        system = INPUT.texts(body.get("system"), INPUT.node("system"))
        texts = list(system)
        last_user: list[str] = []
        messages = _messages(body)
        for message in messages:
            own = INPUT.texts(message, _MESSAGES)
            texts.extend(own)
            if isinstance(message, dict) and message.get("role") == "user":
                last_user = own
        texts.extend(INPUT.texts(body, skip_keys=_READ_FIRST))
        return make_input_view(
            texts=texts, last_user_texts=last_user, system_texts=system,
            tool_arguments=tool_arguments_texts(body.get("messages")),
            message_count=len(messages), has_tools=non_empty_list(body.get("tools")),
            max_output_tokens=int_or_none(body.get("max_tokens")),
        )

    def map_input_texts(self, body: JSON, fn: Callable[[str], str]) -> JSON:
        mapped: JSON = INPUT.map_texts(body, fn)
        return mapped

    def with_instruction(self, body: JSON, instruction: str) -> JSON:
        system = body.get("system")
        if isinstance(system, list):
            return {**body, "system": [{"type": "text", "text": instruction}, *system]}
        if isinstance(system, str) and system:
            return {**body, "system": instruction + "\n\n" + system}
        return {**body, "system": instruction}

    # --- answers

    def holding_reply(self, body: JSON, text: str) -> JSON:
        return {
            "id": new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": str_or(body.get("model"), ""),
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0},
        }

    def output_text(self, response: JSON) -> str:
        # Text blocks as one text (Anthropic splits an answer into several around citations);
        # tool inputs (as JSON text) and thinking each on their own.
        blocks = dicts(response.get("content"))
        answer = "".join(block["text"] for block in blocks
                         if block.get("type") == "text" and isinstance(block.get("text"), str))
        others = [text for block in blocks if block.get("type") != "text"
                  for text in _block_output(block)]
        return "\n".join([answer, *others]) if others else answer

    def map_output_texts(self, response: JSON, fn: Callable[[str], str]) -> JSON:
        content = response.get("content")
        if not isinstance(content, list):
            return response
        return {**response, "content": [_map_output_block(block, fn) for block in content]}

    def response_usage(self, response: JSON) -> Usage | None:
        return usage_from(response.get("usage"), "input_tokens", "output_tokens")

    # --- tool calls (gateway/adapters/tool_calls.py)

    def map_tool_calls(self, response: JSON, fn: CallFn) -> JSON:
        return messages_map_calls(response, fn)

    def stream_tool_names(self, event: str | None, payload: JSON) -> list[NamedCall]:
        return messages_stream_names(payload)

    def opened_blocks(self, event: str | None, payload: JSON) -> tuple[Any, int] | None:
        kind = payload.get("type")
        if kind == "content_block_start":
            return payload.get("index"), 1
        message = payload.get("message")
        if kind == "message_start" and isinstance(message, dict):
            content = message.get("content")
            return None, len(content) if isinstance(content, list) else 0
        return None

    def map_stream_calls(self, event: str | None, payload: JSON, fn: CallFn
                         ) -> JSON:
        return messages_map_stream_calls(payload, fn)

    def without_tools(self, body: JSON, remove: RemoveFn) -> tuple[JSON, list[str]]:
        return messages_without_tools(body, remove)

    # --- streams

    def output_delta(self, event: str | None, payload: JSON) -> OutputDelta | None:
        if payload.get("type") != "content_block_delta":
            return None
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            return None
        field = _DELTA_TEXT.get(str(delta.get("type")))
        text = delta.get(field) if field is not None else None
        if not isinstance(text, str):
            return None
        return OutputDelta(text, key_part(payload.get("index")), held=field == "partial_json")

    def with_stream_delta(self, event: str | None, payload: JSON, text: str) -> JSON:
        delta = payload.get("delta")
        field = _DELTA_TEXT.get(str(delta.get("type"))) if isinstance(delta, dict) else None
        if field is None or payload.get("type") != "content_block_delta":
            return dict(payload)
        assert isinstance(delta, dict)
        return {**payload, "delta": {**delta, field: text}}

    def is_text_end(self, event: str | None, payload: JSON) -> bool:
        return payload.get("type") in ("content_block_stop", "message_delta", "message_stop")

    def stream_usage(self, event: str | None, payload: JSON) -> Usage | None:
        # `message_start` reports the input (and a first output count); `message_delta` the
        # cumulative output, and on newer API versions the input again.
        kind = payload.get("type")
        if kind == "message_start":
            message = payload.get("message")
            return usage_from(message.get("usage") if isinstance(message, dict) else None,
                              "input_tokens", "output_tokens")
        if kind == "message_delta":
            return usage_from(payload.get("usage"), "input_tokens", "output_tokens")
        return None

    def encode_event(self, event: str | None, payload: JSON) -> bytes:
        return encode_frame(dumps(payload), event=event_name(event, payload))

    def output_refusal_frames(self, template: JSON | None, error: GatewayError,
                              extra: Mapping[str, Any]) -> bytes:
        # Anthropic's own mid-stream error event, in the same shape as the refusal of a
        # request: the SDK raises on it (docs/governed-surface.md), and its `permission_error` type
        # is not one a client retries or falls back on (an unknown type reads as a server error).
        return self.stream_error_frame(error, extra)


class CountTokens(Messages):
    """`count_tokens` shares the messages shape but never streams and needs no `max_tokens`."""

    surface = "messages"
    upstream_path = "/v1/messages/count_tokens"
    path = "/messages/count_tokens"
    api = "count_tokens"

    def validate(self, body: JSON) -> None:
        check_field(body, "model", str, required=True, non_empty=True)
        check_field(body, "messages", list, required=True)
        check_list_of_objects(body, "messages")
        check_field(body, "system", str, list)

    def is_stream(self, body: Mapping[str, Any]) -> bool:
        return False


def _messages(body: Mapping[str, Any]) -> list[Any]:
    messages = body.get("messages")
    return messages if isinstance(messages, list) else []


#: Stream deltas of text the model writes, and the field holding it: answer text, a tool call's
#: input as JSON text (held until its block ends), thinking.
_DELTA_TEXT = {"text_delta": "text", "input_json_delta": "partial_json",
               "thinking_delta": "thinking"}
#: Answer blocks holding a tool call's input.
_TOOL_BLOCKS = frozenset({"tool_use", "server_tool_use"})


def _block_output(block: JSON) -> list[str]:
    """The output texts of an answer block other than `text`."""
    kind = str(block.get("type"))
    if kind in _TOOL_BLOCKS and "input" in block:
        return [dumps(block["input"]).decode("utf-8")]
    if kind == "thinking" and isinstance(block.get("thinking"), str):
        return [block["thinking"]]
    return []


def _map_output_block(block: Any, fn: TextFn) -> Any:
    if not isinstance(block, dict):
        return block
    kind = str(block.get("type"))
    if kind == "text" and isinstance(block.get("text"), str):
        return {**block, "text": fn(block["text"])}
    if kind == "thinking" and isinstance(block.get("thinking"), str):
        return {**block, "thinking": fn(block["thinking"])}
    if kind in _TOOL_BLOCKS and "input" in block:
        return {**block, "input": _TOOL_INPUT.map_texts(block["input"], fn)}
    return block
