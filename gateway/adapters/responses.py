"""OpenAI responses: `POST /v1/responses`.

Texts a policy reads: every string of the request except those on `INPUT.exclusions` (see
`gateway.adapters.inventory`): `instructions`, `input` as a string or items of every kind
(message content and refusals, function and custom tool calls with their arguments and inputs,
their outputs, reasoning summaries and texts, shell and computer actions), prompt template
variables, tool names, descriptions and parameter schemas, `text.format` schemas, and any field
the API adds later.

Texts a policy reads in the answer (output): output text and refusal parts, function call
arguments, custom tool call inputs, MCP call and MCP approval request arguments, code
interpreter code, and reasoning summaries and texts; on a stream, their deltas (where each
stands: gateway/adapters/responses_output.py). What a remote MCP tool the provider ran returned
(an `mcp_call`'s `output` or `error`) is read apart, one call at a time, as that call's output
and `tool_result` (gateway/adapters/mcp_items.py).

A refusal of the output ends the stream with the API's `error` event, in the same shape as
every other stream error (`stream_error_frame`): `code: policy_refused`, and a nested `error`
the SDK raises on. Not `response.failed`: its `error.code` must be one of OpenAI's own
`ResponseError.code` values (strict clients reject any other), so it could not say
`policy_refused`, and the SDK yields it as an ordinary event instead of raising.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from functools import partial
from typing import Any

from gateway.adapters.base import (
    JSON,
    Adapter,
    CallFn,
    InputView,
    NamedCall,
    OpenAIErrorShape,
    OutputDelta,
    ProviderRun,
    RemoveFn,
    Usage,
    check_field,
    dumps,
    encode_frame,
    policy_of,
)
from gateway.adapters.inventory import TextInventory
from gateway.adapters.mcp_items import map_mcp_items
from gateway.adapters.reading import (
    event_name,
    int_or_none,
    key_part,
    make_input_view,
    new_id,
    non_empty_list,
    str_or,
    texts_of,
    tool_arguments_texts,
    usage_from,
    with_unescaped,
)
from gateway.adapters.responses_output import (
    DELTA_EVENTS,
    DONE_FIELDS,
    map_output_item,
    released_item,
    released_part,
)
from gateway.adapters.tool_calls import (
    responses_map_calls,
    responses_map_stream_calls,
    responses_stream_names,
    responses_without_tools,
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
_TEXT_END_EVENTS = frozenset({
    "response.output_text.done", "response.refusal.done", "response.content_part.done",
    "response.function_call_arguments.done", "response.custom_tool_call_input.done",
    "response.mcp_call_arguments.done", "response.code_interpreter_call_code.done",
    "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
    "response.reasoning_text.done", "response.output_item.done"}) | _USAGE_EVENTS
_SYSTEM_ROLES = ("system", "developer")


#: Strings of a request the model does not read as text, each with the reason.
INPUT = TextInventory({
    "*.type": "enum: the kind of an item, part or tool",
    "*.role": "enum: the author of a message",
    "*.status": "enum: the state of an item",
    "*.detail": "enum: image detail level",
    "*.id": "identifier of an item",
    "*.call_id": "identifier of the tool call an output answers",
    "*.file_id": "identifier of an uploaded file",
    "*.file_ids": "identifiers of uploaded files",
    "*.container_id": "identifier of a container",
    "*.approval_request_id": "identifier of an approval request",
    "*.caller_id": "identifier of the tool call that called",
    "*.skill_id": "identifier of a skill",
    "*.vector_store_ids": "identifiers of vector stores",
    "*.tunnel_id": "identifier of a network tunnel",
    "*.encrypted_content": "encrypted reasoning, opaque to anyone but the provider",
    "*.file_data": "base64 file bytes",
    "*.file_url": "the address of a file the provider fetches",
    "*.image_url": "an image's address or inline base64 bytes",
    "*.server_url": "the address of an MCP server",
    "*.authorization": "a credential for an MCP server or connector",
    "*.headers": "HTTP headers (credentials) for an MCP server",
    "*.domain_secrets": "credentials a container uses for a domain",
    "*.model": "routing: which model answers, not text it reads",
    "*.data@base64": "base64 bytes of a skill bundle",
    "user": "end-user identifier for abuse monitoring, not sent to the model",
    "safety_identifier": "end-user identifier for abuse monitoring, not sent to the model",
    "prompt_cache_key": "cache routing key, not sent to the model",
    "prompt_cache_retention": "enum: cache retention",
    "prompt_cache_options": "cache settings and identifiers",
    "metadata": "stored with the response, not sent to the model",
    "previous_response_id": "identifier of an earlier response",
    "conversation": "identifier of a conversation",
    "background_options": "identifiers for background mode",
    "context_management": "enum settings for context compaction",
    "moderation": "provider moderation settings, not text the model reads",
    "service_tier": "enum: processing tier",
    "truncation": "enum: truncation strategy",
    "include": "enum list: extra output to include",
    "reasoning": "enum settings: reasoning effort, summary mode",
    "prompt.id": "identifier of a stored prompt template",
    "prompt.version": "version of a stored prompt template",
    "text.verbosity": "enum: answer length",
}, free_form=(
    "tools.parameters", "tools.tools.parameters", "tools.output_schema",
    "tools.tools.output_schema", "tools.input_schema", "tools.annotations",
    "text.format.schema", "input.text.format.schema", "input.tools.parameters",
    "input.tools.tools.parameters", "input.tools.output_schema", "input.tools.tools.output_schema",
    "input.tools.input_schema", "input.tools.annotations", "input.error.content",
    "tool_choice.tools",
))
_ITEMS = INPUT.node("input")
#: `instructions` and `input` are read first (the selectors need them apart), then the rest.
_READ_FIRST = frozenset({"instructions", "input"})


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

    input_inventory = INPUT

    def input_view(self, body: JSON) -> InputView:
        system = INPUT.texts(body.get("instructions"), INPUT.node("instructions"))
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
                own = INPUT.texts(item, _ITEMS)
                texts.extend(own)
                role = item.get("role") if isinstance(item, dict) else None
                if role in _SYSTEM_ROLES:
                    system.extend(own)
                elif role == "user":
                    last_user = own
        texts.extend(INPUT.texts(body, skip_keys=_READ_FIRST))
        return make_input_view(
            texts=texts, last_user_texts=last_user, system_texts=system,
            tool_arguments=tool_arguments_texts(body.get("input")),
            message_count=message_count, has_tools=non_empty_list(body.get("tools")),
            max_output_tokens=int_or_none(body.get("max_output_tokens")),
        )

    def map_input_texts(self, body: JSON, fn: Callable[[str], str]) -> JSON:
        mapped: JSON = INPUT.map_texts(body, fn)
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
        return with_unescaped(texts_of(partial(self.map_output_texts, response)))

    def map_output_texts(self, response: JSON, fn: Callable[[str], str]) -> JSON:
        output = response.get("output")
        if not isinstance(output, list):
            return response
        return {**response, "output": [map_output_item(item, fn) for item in output]}

    def response_usage(self, response: JSON) -> Usage | None:
        return usage_from(response.get("usage"), "input_tokens", "output_tokens")

    # --- tool calls (gateway/adapters/tool_calls.py)

    def map_tool_calls(self, response: JSON, fn: CallFn) -> JSON:
        return responses_map_calls(response, fn)

    def stream_tool_names(self, event: str | None, payload: JSON) -> list[NamedCall]:
        return responses_stream_names(payload)

    def map_stream_calls(self, event: str | None, payload: JSON, fn: CallFn
                         ) -> JSON:
        return responses_map_stream_calls(payload, fn)

    def without_tools(self, body: JSON, remove: RemoveFn) -> tuple[JSON, list[str]]:
        return responses_without_tools(body, remove)

    def map_provider_tools(self, payload: JSON, run: ProviderRun) -> JSON:
        return map_mcp_items(payload, run)

    # --- streams

    def output_delta(self, event: str | None, payload: JSON) -> OutputDelta | None:
        kind = payload.get("type")
        slot = DELTA_EVENTS.get(kind) if isinstance(kind, str) else None
        delta = payload.get("delta")
        if slot is None or not isinstance(delta, str):
            return None
        block, sub, held = slot
        return OutputDelta(delta, (block, key_part(payload.get("output_index")),
                                   key_part(payload.get(sub))), held)

    def with_stream_delta(self, event: str | None, payload: JSON, text: str) -> JSON:
        if self.output_delta(event, payload) is None:
            return dict(payload)
        return {**payload, "delta": text}

    def with_released_texts(self, event: str | None, payload: JSON,
                            released: Mapping[Hashable, str]) -> JSON:
        """"Done" events and the final `response` repeat whole blocks; after output redaction
        they must carry the text the client actually got."""
        kind = str(payload.get("type"))
        index = key_part(payload.get("output_index"))
        if kind in DONE_FIELDS:
            block, sub, field = DONE_FIELDS[kind]
            text = released.get((block, index, key_part(payload.get(sub))))
            return {**payload, field: text} if text is not None else payload
        if kind in ("response.content_part.done", "response.reasoning_summary_part.done") \
                and isinstance(payload.get("part"), dict):
            part = payload["part"]
            number = key_part(payload.get("content_index", payload.get("summary_index")))
            mapped = released_part(part, index, number, released)
            return {**payload, "part": mapped} if mapped is not part else payload
        if kind == "response.output_item.done" and isinstance(payload.get("item"), dict):
            return {**payload, "item": released_item(payload["item"], index, released)}
        response = payload.get("response")
        if kind in _USAGE_EVENTS and isinstance(response, dict) \
                and isinstance(response.get("output"), list):
            output = [released_item(item, number, released) if isinstance(item, dict) else item
                      for number, item in enumerate(response["output"])]
            return {**payload, "response": {**response, "output": output}}
        return payload

    def is_text_end(self, event: str | None, payload: JSON) -> bool:
        return str(payload.get("type")) in _TEXT_END_EVENTS

    def stream_usage(self, event: str | None, payload: JSON) -> Usage | None:
        # Also a failed or incomplete response reports the tokens it used.
        response = payload.get("response")
        if str(payload.get("type")) in _USAGE_EVENTS and isinstance(response, dict):
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
