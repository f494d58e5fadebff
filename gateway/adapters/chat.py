"""OpenAI chat completions: `POST /v1/chat/completions`.

Texts a policy reads: every string of the request except those on `INPUT.exclusions` (see
`gateway.adapters.inventory`): the content of every message whatever its role, as a string or
parts of every kind (text, refusal, file names), names, assistant tool calls and their
arguments, refusals, tool results, tool and function descriptions and their parameter schemas,
`response_format.json_schema`, `prediction.content`, and any field the API adds later.

Texts a policy reads in the answer (output): the message content, refusals, and the arguments of
tool calls (and of the legacy `function_call`), of every choice; on a stream, the same deltas
(where each stands: gateway/adapters/chat_output.py).
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
    RemoveFn,
    Usage,
    check_field,
    check_list_of_objects,
    dumps,
    encode_frame,
    policy_of,
)
from gateway.adapters.chat_output import (
    FIRST_TEXT,
    PIECE_FIELDS,
    delta_pieces,
    first_delta,
    map_answer,
    only_content,
    only_piece,
    with_piece,
)
from gateway.adapters.inventory import TextInventory
from gateway.adapters.reading import (
    dicts,
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
from gateway.adapters.tool_calls import chat_map_calls, chat_stream_names, chat_without_tools
from gateway.config import OPENAI
from gateway.errors import GatewayError, InvalidRequest
from gateway.upstream.sse import Frame

#: Strings of a request the model does not read as text, each with the reason.
INPUT = TextInventory({
    "*.type": "enum: the kind of a part or tool",
    "*.role": "enum: the author of a message",
    "*.id": "identifier (tool call ids, audio ids)",
    "*.tool_call_id": "identifier of the tool call a result answers",
    "*.file_id": "identifier of an uploaded file",
    "*.detail": "enum: image detail level",
    "model": "routing: which model answers, not text it reads",
    "user": "end-user identifier for abuse monitoring, not sent to the model",
    "safety_identifier": "end-user identifier for abuse monitoring, not sent to the model",
    "prompt_cache_key": "cache routing key, not sent to the model",
    "metadata": "stored with the completion, not sent to the model",
    "stop": "stop sequences end the output; the model does not read them",
    "service_tier": "enum: processing tier",
    "reasoning_effort": "enum: reasoning effort",
    "verbosity": "enum: answer length",
    "modalities": "enum list: output modalities",
    "audio.voice": "voice of audio output, not text the model reads",
    "audio.format": "enum: audio output format",
    "moderation": "provider moderation settings, not text the model reads",
    "messages.content.image_url.url": "an image's address or inline base64 bytes",
    "messages.content.input_audio.data": "base64 audio bytes",
    "messages.content.input_audio.format": "enum: audio format",
    "messages.content.file.file_data": "base64 file bytes",
}, free_form=(
    "tools.function.parameters", "functions.parameters", "response_format.json_schema.schema",
    "tool_choice.allowed_tools.tools",
))
_MESSAGES = INPUT.node("messages")


class ChatCompletions(OpenAIErrorShape, Adapter):
    surface = "chat.completions"
    provider_kind = OPENAI
    upstream_path = "/chat/completions"
    path = "/chat/completions"
    api = "chat.completions"

    def validate(self, body: JSON) -> None:
        check_field(body, "model", str, required=True, non_empty=True)
        check_field(body, "messages", list, required=True, non_empty=True)
        check_list_of_objects(body, "messages")
        for index, message in enumerate(body["messages"]):
            if not isinstance(message.get("role"), str):
                raise InvalidRequest(
                    f"Missing or invalid 'messages[{index}].role': expected a string.",
                    param=f"messages[{index}].role",
                )
            content = message.get("content")
            if content is not None and not isinstance(content, str | list):
                raise InvalidRequest(
                    f"Invalid type for 'messages[{index}].content': expected a string or an "
                    f"array of content parts, got {type(content).__name__}.",
                    param=f"messages[{index}].content",
                )
        check_field(body, "stream", bool)
        check_field(body, "stream_options", dict)
        check_field(body, "max_tokens", int)
        check_field(body, "max_completion_tokens", int)
        check_field(body, "tools", list)

    def stream_error_frame(self, error: GatewayError, extra: Mapping[str, Any] | None = None
                           ) -> bytes:
        # OpenAI itself reports mid-stream failures as a data frame holding `error`; the SDK
        # raises APIError on it, whose `body` is that `error` object only: the `policy` object
        # is repeated inside it so that code catching the exception can read it.
        body = self.error_body(error)
        if extra:
            body.update(extra)
            body["error"].update(policy_of(extra))
        return encode_frame(dumps(body))

    def is_terminal(self, frame: Frame) -> bool:
        return frame.is_done

    # --- the governed surface

    input_inventory = INPUT

    def input_view(self, body: JSON) -> InputView:
        texts: list[str] = []
        system: list[str] = []
        last_user: list[str] = []
        messages = _messages(body)
        for message in messages:
            own = INPUT.texts(message, _MESSAGES)
            texts.extend(own)
            role = message.get("role") if isinstance(message, dict) else None
            if role in ("system", "developer"):
                system.extend(own)
            elif role == "user":
                last_user = own
        texts.extend(INPUT.texts(body, skip_keys=_READ_FIRST))
        return make_input_view(
            texts=texts, last_user_texts=last_user, system_texts=system,
            tool_arguments=tool_arguments_texts(body.get("messages")),
            message_count=len(messages),
            # `functions` is the deprecated spelling of `tools`; it still gives the model tools.
            has_tools=non_empty_list(body.get("tools")) or non_empty_list(body.get("functions")),
            max_output_tokens=_max_output_tokens(body),
        )

    def map_input_texts(self, body: JSON, fn: Callable[[str], str]) -> JSON:
        mapped: JSON = INPUT.map_texts(body, fn)
        return mapped

    def with_instruction(self, body: JSON, instruction: str) -> JSON:
        return {**body, "messages": [{"role": "system", "content": instruction},
                                     *_messages(body)]}

    def prepare_stream(self, body: JSON) -> tuple[JSON, bool]:
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            return body, True
        options = options if isinstance(options, dict) else {}
        return {**body, "stream_options": {**options, "include_usage": True}}, False

    # --- answers

    def holding_reply(self, body: JSON, text: str) -> JSON:
        return {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": _model(body),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None,
                            "annotations": []},
                "logprobs": None,
                "finish_reason": "stop",
            }],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }

    def output_text(self, response: JSON) -> str:
        # Every choice, not only the first: with `n > 1` the others reach the client too.
        return with_unescaped(texts_of(partial(self.map_output_texts, response)))

    def map_output_texts(self, response: JSON, fn: Callable[[str], str]) -> JSON:
        choices = response.get("choices")
        if not isinstance(choices, list):
            return response
        mapped = []
        for choice in choices:
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict):
                choice = {**choice, "message": map_answer(message, fn)}
            mapped.append(choice)
        return {**response, "choices": mapped}

    def response_usage(self, response: JSON) -> Usage | None:
        return usage_from(response.get("usage"), "prompt_tokens", "completion_tokens")

    # --- tool calls (gateway/adapters/tool_calls.py)

    def map_tool_calls(self, response: JSON, fn: CallFn) -> JSON:
        return chat_map_calls(response, fn)

    def stream_tool_names(self, event: str | None, payload: JSON) -> list[NamedCall]:
        return chat_stream_names(payload)

    def without_tools(self, body: JSON, remove: RemoveFn) -> tuple[JSON, list[str]]:
        return chat_without_tools(body, remove)

    # --- streams

    def output_delta(self, event: str | None, payload: JSON) -> OutputDelta | None:
        choices = payload.get("choices")
        if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
            return None
        choice = choices[0]
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return None
        if only_content(delta):  # the common chunk, on the hot path
            index = choice.get("index")
            block = FIRST_TEXT if index == 0 else (key_part(index), "content")
            return OutputDelta(delta["content"], block)
        pieces = delta_pieces(key_part(choice.get("index")), delta)
        return pieces[0][1] if len(pieces) == 1 else None

    def with_stream_delta(self, event: str | None, payload: JSON, text: str) -> JSON:
        choices = payload.get("choices")
        if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
            return dict(payload)
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict) and only_content(delta):
            return {**payload, "choices": [{**choice, "delta": {**delta, "content": text}}]}
        pieces = (delta_pieces(key_part(choice.get("index")), delta)
                  if isinstance(delta, dict) else [])
        if len(pieces) != 1:
            return dict(payload)
        assert isinstance(delta, dict)
        delta = with_piece(delta, pieces[0][0], text)
        return {**payload, "choices": [{**choice, "delta": delta}]}

    def held_frame(self, event: str | None, payload: JSON) -> JSON | None:
        # The first chunk of a tool call names it (id, type, function name): that goes out,
        # without its arguments, so the client's accumulator sees the calls in order.
        delta = first_delta(payload)
        calls = delta.get("tool_calls") if delta is not None else None
        call = calls[0] if isinstance(calls, list) and calls else None
        if isinstance(call, dict) and ("id" in call or "type" in call):
            return self.with_stream_delta(event, payload, "")
        return None

    def split_output(self, event: str | None, payload: JSON) -> list[JSON] | None:
        choices = payload.get("choices")
        if not isinstance(choices, list):
            return None
        parts: list[JSON] = []
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            pieces = (delta_pieces(key_part(choice.get("index")), delta)
                      if isinstance(delta, dict) else [])
            if not pieces:
                parts.append({**payload, "choices": [choice]})
                continue
            assert isinstance(delta, dict)
            rest = {k: v for k, v in delta.items() if k not in PIECE_FIELDS}
            for number, (where, _piece) in enumerate(pieces):
                only = only_piece(delta, where)
                last = number == len(pieces) - 1
                parts.append({**payload, "choices": [{
                    **choice, "delta": {**(rest if number == 0 else {}), **only},
                    "finish_reason": choice.get("finish_reason") if last else None}]})
        return parts if len(parts) > 1 else None

    def is_text_end(self, event: str | None, payload: JSON) -> bool:
        # The chunk with a `finish_reason` closes the text; held-back text goes before it.
        return any(choice.get("finish_reason") is not None
                   for choice in dicts(payload.get("choices")))

    def ends_block(self, event: str | None, payload: JSON, block: Hashable) -> bool:
        # With `n > 1` choices stream interleaved: one finishing closes only its own blocks.
        finished = {key_part(choice.get("index")) for choice in dicts(payload.get("choices"))
                    if choice.get("finish_reason") is not None}
        return isinstance(block, tuple) and block[0] in finished

    def stream_usage(self, event: str | None, payload: JSON) -> Usage | None:
        return usage_from(payload.get("usage"), "prompt_tokens", "completion_tokens")

    def is_usage_only_chunk(self, event: str | None, payload: JSON) -> bool:
        return payload.get("choices") == [] and isinstance(payload.get("usage"), dict)

    def encode_event(self, event: str | None, payload: JSON) -> bytes:
        return encode_frame(dumps(payload))  # chat frames never have an `event:` line

    def output_refusal_frames(self, template: JSON | None, error: GatewayError,
                              extra: Mapping[str, Any]) -> bytes:
        # A last chunk that says the content was filtered (docs/governed-surface.md), then the
        # refusal itself as OpenAI's own mid-stream error frame, then the normal end. A client
        # reading chunks sees `finish_reason == "content_filter"`; the SDKs then raise on the error
        # frame (`code: policy_refused`), as they do for the refusal of a request, so a refused
        # answer cannot pass for a finished one. The chunk keeps the stream's id, model and
        # created, as every chunk of one completion does.
        template = template or {}
        chunk: JSON = {
            "id": str_or(template.get("id"), new_id("chatcmpl-")),
            "object": "chat.completion.chunk",
            "created": int_or_none(template.get("created")) or int(time.time()),
            "model": str_or(template.get("model"), ""),
            "choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}],
        }
        chunk.update(extra)
        return (encode_frame(dumps(chunk)) + self.stream_error_frame(error, extra)
                + encode_frame(b"[DONE]"))


def _messages(body: Mapping[str, Any]) -> list[Any]:
    messages = body.get("messages")
    return messages if isinstance(messages, list) else []


#: Read message by message first (for the selectors), then the rest of the body.
_READ_FIRST = frozenset({"messages"})


def _max_output_tokens(body: Mapping[str, Any]) -> int | None:
    newer = int_or_none(body.get("max_completion_tokens"))
    return newer if newer is not None else int_or_none(body.get("max_tokens"))


def _model(body: Mapping[str, Any]) -> str:
    return str_or(body.get("model"), "")

