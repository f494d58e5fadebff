"""OpenAI responses: `POST /v1/responses`.

Texts a policy reads (SPEC §5.3): `instructions`, and `input` as a string or as items: the
content of message items (a string, or their `input_text` / `output_text` parts) and the
`output` of `function_call_output` and `custom_tool_call_output` items (a string, or their
`input_text` parts). Images, files, tool-call arguments and reasoning carry no text a policy reads.

A refusal of the output ends the stream with the API's `error` event, in the same shape as
every other stream error (`stream_error_frame`): `code: policy_refused`, and a nested `error`
the SDK raises on. Not `response.failed`: its `error.code` must be one of OpenAI's own
`ResponseError.code` values (strict clients reject any other), so it could not say
`policy_refused`, and the SDK yields it as an ordinary event instead of raising.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from gateway.adapters.base import (
    JSON,
    Adapter,
    InputView,
    OpenAIErrorShape,
    TextFn,
    Usage,
    check_field,
    dicts,
    dumps,
    encode_frame,
    event_name,
    int_or_none,
    make_input_view,
    new_id,
    non_empty_list,
    policy_of,
    str_or,
    texts_of,
    usage_from,
)
from gateway.config import OPENAI
from gateway.errors import GatewayError
from gateway.upstream.sse import Frame

_TERMINAL_EVENTS = frozenset(
    {"response.completed", "response.failed", "response.incomplete", "error"}
)
#: Lifecycle events whose `response` reports the final usage.
_USAGE_EVENTS = frozenset({"response.completed", "response.failed", "response.incomplete"})
#: "Done" events repeat the whole text, so held-back text must be released before the first.
_TEXT_END_EVENTS = frozenset({"response.output_text.done", "response.content_part.done",
                              "response.output_item.done"}) | _USAGE_EVENTS
_SYSTEM_ROLES = ("system", "developer")


class Responses(OpenAIErrorShape, Adapter):
    surface = "responses"
    provider_kind = OPENAI
    upstream_path = "/responses"
    path = "/responses"
    api = "responses"

    def validate(self, body: JSON) -> None:
        check_field(body, "model", str, required=True, non_empty=True)
        check_field(body, "input", str, list, required=True)
        check_field(body, "instructions", str)
        check_field(body, "stream", bool)
        check_field(body, "max_output_tokens", int)
        check_field(body, "tools", list)

    def stream_error_frame(self, error: GatewayError, extra: Mapping[str, Any] | None = None
                           ) -> bytes:
        # The Responses API's own stream error event. `sequence_number` is required by the SDK's
        # type but the SDK does not check its order, so 0 is safe for a gateway-made event.
        # The nested `error` repeats the fields in the chat completions shape: the openai SDK
        # only raises on an event holding `error` and silently yields the spec's flat event
        # (openai/openai-python#2487), which would let a failed stream pass for a finished one.
        # The SDK's exception holds only that nested `error`, so it repeats `policy` too.
        body: JSON = {
            "type": "error",
            "code": error.code,
            "message": error.message,
            "param": error.param,
            "sequence_number": 0,
            "error": {"type": error.error_type, "code": error.code, "message": error.message,
                      "param": error.param, **policy_of(extra or {})},
        }
        if extra:
            body.update(extra)
        return encode_frame(dumps(body), event="error")

    def is_terminal(self, frame: Frame) -> bool:
        return frame.event in _TERMINAL_EVENTS or frame.is_done

    # --- the governed surface

    def input_view(self, body: JSON) -> InputView:
        instructions = body.get("instructions")
        system = [instructions] if isinstance(instructions, str) else []
        texts = list(system)
        items = body.get("input")
        last_user: list[str] = []
        if isinstance(items, str):
            texts.append(items)
            last_user = [items]
            message_count = 1
        else:
            items = items if isinstance(items, list) else []
            message_count = len(items)
            for item in items:
                own = texts_of(partial(_map_item, item))
                texts.extend(own)
                role = item.get("role") if isinstance(item, dict) else None
                if role in _SYSTEM_ROLES:
                    system.extend(own)
                elif role == "user":
                    last_user = own
        return make_input_view(
            texts=texts, last_user_texts=last_user, system_texts=system,
            message_count=message_count, has_tools=non_empty_list(body.get("tools")),
            max_output_tokens=int_or_none(body.get("max_output_tokens")),
        )

    def map_input_texts(self, body: JSON, fn: Callable[[str], str]) -> JSON:
        mapped = dict(body)
        if isinstance(body.get("instructions"), str):
            mapped["instructions"] = fn(body["instructions"])
        items = body.get("input")
        if isinstance(items, str):
            mapped["input"] = fn(items)
        elif isinstance(items, list):
            mapped["input"] = [_map_item(item, fn) for item in items]
        return mapped

    def with_instruction(self, body: JSON, instruction: str) -> JSON:
        old = body.get("instructions")
        if isinstance(old, str) and old:
            return {**body, "instructions": instruction + "\n\n" + old}
        return {**body, "instructions": instruction}

    # --- answers

    def holding_reply(self, body: JSON, text: str) -> JSON:
        now = int(time.time())
        instructions = body.get("instructions")
        message = {"id": new_id("msg_"), "type": "message", "status": "completed",
                   "role": "assistant", "content": [
                       {"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}
        return {
            **_response_skeleton(new_id("resp_"), str_or(body.get("model"), ""), now),
            "status": "completed",
            "completed_at": now,
            "instructions": instructions if isinstance(instructions, str) else None,
            "max_output_tokens": int_or_none(body.get("max_output_tokens")),
            "output": [message],
            "usage": {"input_tokens": 0,
                      "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                      "output_tokens": 0, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": 0},
        }

    def output_text(self, response: JSON) -> str:
        return "".join(part["text"]
                       for item in dicts(response.get("output")) if item.get("type") == "message"
                       for part in dicts(item.get("content"))
                       if part.get("type") == "output_text" and isinstance(part.get("text"), str))

    def map_output_texts(self, response: JSON, fn: Callable[[str], str]) -> JSON:
        output = response.get("output")
        if not isinstance(output, list):
            return response
        items = []
        for item in output:
            if isinstance(item, dict) and item.get("type") == "message" and \
                    isinstance(item.get("content"), list):
                item = {**item, "content": [
                    {**part, "text": fn(part["text"])}
                    if isinstance(part, dict) and part.get("type") == "output_text"
                    and isinstance(part.get("text"), str) else part
                    for part in item["content"]]}
            items.append(item)
        return {**response, "output": items}

    def response_usage(self, response: JSON) -> Usage | None:
        return usage_from(response.get("usage"), "input_tokens", "output_tokens")

    # --- streams

    def stream_delta(self, event: str | None, payload: JSON) -> str | None:
        delta = payload.get("delta")
        if payload.get("type") == "response.output_text.delta" and isinstance(delta, str):
            return delta
        return None

    def with_stream_delta(self, event: str | None, payload: JSON, text: str) -> JSON:
        if self.stream_delta(event, payload) is None:
            return dict(payload)
        return {**payload, "delta": text}

    def with_released_text(self, event: str | None, payload: JSON, text: str) -> JSON:
        """`response.output_text.done`, `content_part.done`, `output_item.done` and
        `response.completed` repeat the whole output; after output redaction they must carry
        the redacted text. Rewritten when the output is one text part, the shape the Responses
        API streams for a plain answer (with several parts the per-part split is unknown)."""
        kind = payload.get("type")
        if kind == "response.output_text.done":
            return {**payload, "text": text}
        if kind == "response.content_part.done" and isinstance(payload.get("part"), dict):
            part = payload["part"]
            if part.get("type") == "output_text":
                return {**payload, "part": {**part, "text": text}}
        if kind == "response.output_item.done" and isinstance(payload.get("item"), dict):
            item = _with_single_text(payload["item"], text)
            return {**payload, "item": item} if item is not None else payload
        if kind == "response.completed" and isinstance(payload.get("response"), dict):
            response = payload["response"]
            outputs = [o for o in response.get("output") or [] if isinstance(o, dict)
                       and o.get("type") == "message"]
            if len(outputs) == 1:
                item = _with_single_text(outputs[0], text)
                if item is not None:
                    output = [item if o is outputs[0] else o for o in response["output"]]
                    return {**payload, "response": {**response, "output": output}}
        return payload

    def is_text_end(self, event: str | None, payload: JSON) -> bool:
        return payload.get("type") in _TEXT_END_EVENTS

    def stream_usage(self, event: str | None, payload: JSON) -> Usage | None:
        # Also a failed or incomplete response reports the tokens it used.
        response = payload.get("response")
        if payload.get("type") in _USAGE_EVENTS and isinstance(response, dict):
            return usage_from(response.get("usage"), "input_tokens", "output_tokens")
        return None

    def sequence_number(self, payload: JSON) -> int | None:
        return int_or_none(payload.get("sequence_number"))

    def with_sequence_number(self, payload: JSON, number: int) -> JSON:
        return {**payload, "sequence_number": number}

    def encode_event(self, event: str | None, payload: JSON) -> bytes:
        return encode_frame(dumps(payload), event=event_name(event, payload))

    def output_refusal_frames(self, template: JSON | None, error: GatewayError,
                              extra: Mapping[str, Any]) -> bytes:
        """The `error` event, numbered after the last frame the client got (`template`)."""
        number = int_or_none((template or {}).get("sequence_number"))
        numbered = {"sequence_number": number + 1} if number is not None else {}
        return self.stream_error_frame(error, {**extra, **numbered})


def _response_skeleton(response_id: str, model: str, created_at: int) -> JSON:
    """The fields every `response` object has, in the state before any output."""
    return {
        "id": response_id, "object": "response", "created_at": created_at,
        "status": "in_progress", "background": False, "completed_at": None, "error": None,
        "incomplete_details": None, "instructions": None, "max_output_tokens": None,
        "max_tool_calls": None, "model": model, "output": [], "parallel_tool_calls": True,
        "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
        "service_tier": "default", "store": False, "temperature": None,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
        "top_logprobs": 0, "top_p": None, "truncation": "disabled", "usage": None,
        "user": None, "metadata": {},
    }


def _map_item(item: Any, fn: TextFn) -> Any:
    if not isinstance(item, dict):
        return item
    kind = item.get("type")
    if kind in ("function_call_output", "custom_tool_call_output") and "output" in item:
        return {**item, "output": _map_content(item["output"], fn)}
    if kind in (None, "message") and "content" in item:
        return {**item, "content": _map_content(item["content"], fn)}
    return item


def _map_content(content: Any, fn: TextFn) -> Any:
    if isinstance(content, str):
        return fn(content)
    if isinstance(content, list):
        return [_map_part(part, fn) for part in content]
    return content


def _map_part(part: Any, fn: TextFn) -> Any:
    if isinstance(part, dict) and part.get("type") in ("input_text", "output_text") \
            and isinstance(part.get("text"), str):
        return {**part, "text": fn(part["text"])}
    return part


def _with_single_text(item: JSON, text: str) -> JSON | None:
    """`item` (an output message) with its one `output_text` part carrying `text`."""
    content = item.get("content")
    if not isinstance(content, list):
        return None
    texts = [i for i, part in enumerate(content)
             if isinstance(part, dict) and part.get("type") == "output_text"]
    if len(texts) != 1:
        return None
    parts = list(content)
    parts[texts[0]] = {**parts[texts[0]], "text": text}
    return {**item, "content": parts}
