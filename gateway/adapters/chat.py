"""OpenAI chat completions: `POST /v1/chat/completions`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.adapters.base import (
    JSON, Adapter, OpenAIErrorShape, check_field, check_list_of_objects, dumps, encode_frame,
)
from gateway.config import OPENAI
from gateway.errors import GatewayError, InvalidRequest
from gateway.sse import Frame


class ChatCompletions(OpenAIErrorShape, Adapter):
    surface = "chat.completions"
    provider_kind = OPENAI
    upstream_path = "/chat/completions"

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
        # raises APIError on it.
        body = self.error_body(error)
        if extra:
            body.update(extra)
        return encode_frame(dumps(body))

    def is_terminal(self, frame: Frame) -> bool:
        return frame.is_done
