"""OpenAI chat completions: `POST /v1/chat/completions`.

Texts a policy reads (SPEC §5.3): the `content` of every message, whatever its role (system,
developer, user, assistant, tool, legacy function), as a string or as the `text` of its `text`
parts; image, audio and file parts carry no text. Tool-call arguments are model output and not
read.
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
    check_list_of_objects,
    dicts,
    dumps,
    encode_frame,
    int_or_none,
    make_input_view,
    map_message_content,
    new_id,
    non_empty_list,
    policy_of,
    str_or,
    texts_of,
    usage_from,
)
from gateway.config import OPENAI
from gateway.errors import GatewayError, InvalidRequest
from gateway.upstream.sse import Frame


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

    def input_view(self, body: JSON) -> InputView:
        texts: list[str] = []
        system: list[str] = []
        last_user: list[str] = []
        messages = _messages(body)
        for message in messages:
            own = texts_of(partial(_map_message, message))
            texts.extend(own)
            role = message.get("role") if isinstance(message, dict) else None
            if role in ("system", "developer"):
                system.extend(own)
            elif role == "user":
                last_user = own
        return make_input_view(
            texts=texts, last_user_texts=last_user, system_texts=system,
            message_count=len(messages),
            # `functions` is the deprecated spelling of `tools`; it still gives the model tools.
            has_tools=non_empty_list(body.get("tools")) or non_empty_list(body.get("functions")),
            max_output_tokens=_max_output_tokens(body),
        )

    def map_input_texts(self, body: JSON, fn: Callable[[str], str]) -> JSON:
        if not isinstance(body.get("messages"), list):
            return dict(body)
        return {**body, "messages": [_map_message(m, fn) for m in body["messages"]]}

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
        choices = response.get("choices")
        texts = [choice["message"]["content"] for choice in dicts(choices)
                 if isinstance(choice.get("message"), dict)
                 and isinstance(choice["message"].get("content"), str)]
        return "\n".join(texts)

    def map_output_texts(self, response: JSON, fn: Callable[[str], str]) -> JSON:
        choices = response.get("choices")
        if not isinstance(choices, list):
            return response
        mapped = []
        for choice in choices:
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                choice = {**choice, "message": {**message, "content": fn(message["content"])}}
            mapped.append(choice)
        return {**response, "choices": mapped}

    def response_usage(self, response: JSON) -> Usage | None:
        return usage_from(response.get("usage"), "prompt_tokens", "completion_tokens")

    # --- streams

    def stream_delta(self, event: str | None, payload: JSON) -> str | None:
        delta = _first_delta(payload)
        content = delta.get("content") if delta is not None else None
        return content if isinstance(content, str) else None

    def with_stream_delta(self, event: str | None, payload: JSON, text: str) -> JSON:
        delta = _first_delta(payload)
        if delta is None:
            return dict(payload)
        first, *rest = payload["choices"]
        return {**payload, "choices": [{**first, "delta": {**delta, "content": text}}, *rest]}

    def is_text_end(self, event: str | None, payload: JSON) -> bool:
        # The chunk with a `finish_reason` closes the text; held-back text goes before it.
        return any(choice.get("finish_reason") is not None
                   for choice in dicts(payload.get("choices")))

    def stream_usage(self, event: str | None, payload: JSON) -> Usage | None:
        return usage_from(payload.get("usage"), "prompt_tokens", "completion_tokens")

    def is_usage_only_chunk(self, event: str | None, payload: JSON) -> bool:
        return payload.get("choices") == [] and isinstance(payload.get("usage"), dict)

    def encode_event(self, event: str | None, payload: JSON) -> bytes:
        return encode_frame(dumps(payload))  # chat frames never have an `event:` line

    def output_refusal_frames(self, template: JSON | None, error: GatewayError,
                              extra: Mapping[str, Any]) -> bytes:
        # A last chunk that says the content was filtered (SPEC §7.3), then the refusal itself
        # as OpenAI's own mid-stream error frame, then the normal end. A client reading chunks
        # sees `finish_reason == "content_filter"`; the SDKs then raise on the error frame
        # (`code: policy_refused`), as they do for the refusal of a request, so a refused
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


def _map_message(message: Any, fn: TextFn) -> Any:
    return map_message_content(message, fn, _map_part)


def _map_part(part: Any, fn: TextFn) -> Any:
    if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
        return {**part, "text": fn(part["text"])}
    return part


def _max_output_tokens(body: Mapping[str, Any]) -> int | None:
    newer = int_or_none(body.get("max_completion_tokens"))
    return newer if newer is not None else int_or_none(body.get("max_tokens"))


def _first_delta(payload: Mapping[str, Any]) -> JSON | None:
    choices = payload.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        delta = choices[0].get("delta")
        if isinstance(delta, dict):
            return delta
    return None


def _model(body: Mapping[str, Any]) -> str:
    return str_or(body.get("model"), "")

