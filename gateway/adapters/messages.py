"""Anthropic messages: `POST /v1/messages` and `POST /v1/messages/count_tokens`.

Texts a policy reads (SPEC §5.3): `system` (a string or `text` blocks) and the content of every
message: a string, or `text` blocks, `tool_result` blocks (string content or the `text` blocks in
it), `search_result` blocks (their `text` blocks) and plain-text `document` blocks (a `text`
source's `data`, or the `text` blocks of a `content` source). Images, tool inputs and thinking
carry no text a policy reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from gateway.adapters.base import (
    JSON,
    Adapter,
    InputView,
    TextFn,
    Usage,
    check_field,
    check_list_of_objects,
    dicts,
    dumps,
    encode_frame,
    event_name,
    int_or_none,
    make_input_view,
    map_message_content,
    new_id,
    non_empty_list,
    str_or,
    texts_of,
    usage_from,
)
from gateway.config import ANTHROPIC
from gateway.errors import GatewayError, InvalidRequest
from gateway.upstream.sse import Frame


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
        # (`APIStatusError.error_code`); `code` repeats it in the gateway's own place (SPEC §11).
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

    def input_view(self, body: JSON) -> InputView:
        system = texts_of(partial(_map_system, body.get("system")))
        texts = list(system)
        last_user: list[str] = []
        messages = _messages(body)
        for message in messages:
            own = texts_of(partial(_map_message, message))
            texts.extend(own)
            if isinstance(message, dict) and message.get("role") == "user":
                last_user = own
        return make_input_view(
            texts=texts, last_user_texts=last_user, system_texts=system,
            message_count=len(messages), has_tools=non_empty_list(body.get("tools")),
            max_output_tokens=int_or_none(body.get("max_tokens")),
        )

    def map_input_texts(self, body: JSON, fn: Callable[[str], str]) -> JSON:
        mapped = dict(body)
        if "system" in body:
            mapped["system"] = _map_system(body["system"], fn)
        if isinstance(body.get("messages"), list):
            mapped["messages"] = [_map_message(message, fn) for message in body["messages"]]
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
        return "".join(block["text"] for block in dicts(response.get("content"))
                       if block.get("type") == "text" and isinstance(block.get("text"), str))

    def map_output_texts(self, response: JSON, fn: Callable[[str], str]) -> JSON:
        content = response.get("content")
        if not isinstance(content, list):
            return response
        return {**response, "content": [
            {**block, "text": fn(block["text"])}
            if isinstance(block, dict) and block.get("type") == "text"
            and isinstance(block.get("text"), str) else block
            for block in content]}

    def response_usage(self, response: JSON) -> Usage | None:
        return usage_from(response.get("usage"), "input_tokens", "output_tokens")

    # --- streams

    def stream_delta(self, event: str | None, payload: JSON) -> str | None:
        delta = _text_delta(payload)
        return delta["text"] if delta is not None else None

    def with_stream_delta(self, event: str | None, payload: JSON, text: str) -> JSON:
        delta = _text_delta(payload)
        if delta is None:
            return dict(payload)
        return {**payload, "delta": {**delta, "text": text}}

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
        # request: the SDK raises on it (SPEC §7.3), and its `permission_error` type is not one
        # a client retries or falls back on (an unknown type reads as a server error).
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


def _map_system(system: Any, fn: TextFn) -> Any:
    if isinstance(system, str):
        return fn(system)
    if isinstance(system, list):
        return [_map_text_block(block, fn) for block in system]
    return system


def _map_message(message: Any, fn: TextFn) -> Any:
    return map_message_content(message, fn, _map_block)


def _map_block(block: Any, fn: TextFn) -> Any:
    if not isinstance(block, dict):
        return block
    kind = block.get("type")
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, str):
            return {**block, "content": fn(content)}
        return {**block, "content": _map_text_blocks(content, fn)} if "content" in block else block
    if kind == "search_result" and "content" in block:
        return {**block, "content": _map_text_blocks(block["content"], fn)}
    if kind == "document" and isinstance(block.get("source"), dict):
        source = block["source"]
        if source.get("type") == "text" and isinstance(source.get("data"), str):
            return {**block, "source": {**source, "data": fn(source["data"])}}
        if source.get("type") == "content" and "content" in source:
            content = source["content"]
            mapped = fn(content) if isinstance(content, str) else _map_text_blocks(content, fn)
            return {**block, "source": {**source, "content": mapped}}
        return block
    return _map_text_block(block, fn)


def _map_text_blocks(blocks: Any, fn: TextFn) -> Any:
    """Blocks nested in a tool result, search result or document: only their `text` blocks
    (never deeper, so a hostile nesting cannot recurse without bound)."""
    if not isinstance(blocks, list):
        return blocks
    return [_map_text_block(block, fn) for block in blocks]


def _map_text_block(block: Any, fn: TextFn) -> Any:
    if isinstance(block, dict) and block.get("type") == "text" \
            and isinstance(block.get("text"), str):
        return {**block, "text": fn(block["text"])}
    return block


def _text_delta(payload: Mapping[str, Any]) -> JSON | None:
    if payload.get("type") != "content_block_delta":
        return None
    delta = payload.get("delta")
    if isinstance(delta, dict) and delta.get("type") == "text_delta" \
            and isinstance(delta.get("text"), str):
        return delta
    return None
