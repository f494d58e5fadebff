"""OpenAI responses: `POST /v1/responses`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.adapters.base import JSON, Adapter, OpenAIErrorShape, check_field, dumps, encode_frame
from gateway.config import OPENAI
from gateway.errors import GatewayError
from gateway.sse import Frame

_TERMINAL_EVENTS = frozenset(
    {"response.completed", "response.failed", "response.incomplete", "error"}
)


class Responses(OpenAIErrorShape, Adapter):
    surface = "responses"
    provider_kind = OPENAI
    upstream_path = "/responses"

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
        body: JSON = {
            "type": "error",
            "code": error.code,
            "message": error.message,
            "param": error.param,
            "sequence_number": 0,
        }
        if extra:
            body.update(extra)
        return encode_frame(dumps(body), event="error")

    def is_terminal(self, frame: Frame) -> bool:
        return frame.event in _TERMINAL_EVENTS or frame.is_done
