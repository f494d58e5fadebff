"""Anthropic messages: `POST /v1/messages` and `POST /v1/messages/count_tokens`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.adapters.base import (
    JSON, Adapter, check_field, check_list_of_objects, dumps, encode_frame,
)
from gateway.config import ANTHROPIC
from gateway.errors import GatewayError, InvalidRequest
from gateway.sse import Frame


class Messages(Adapter):
    surface = "messages"
    provider_kind = ANTHROPIC
    upstream_path = "/v1/messages"

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
        body: JSON = {
            "type": "error",
            "error": {"type": error.anthropic_type, "message": error.message, "code": error.code},
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


class CountTokens(Messages):
    """`count_tokens` shares the messages shape but never streams and needs no `max_tokens`."""

    surface = "messages"
    upstream_path = "/v1/messages/count_tokens"

    def validate(self, body: JSON) -> None:
        check_field(body, "model", str, required=True, non_empty=True)
        check_field(body, "messages", list, required=True)
        check_list_of_objects(body, "messages")
        check_field(body, "system", str, list)

    def is_stream(self, body: Mapping[str, Any]) -> bool:
        return False
