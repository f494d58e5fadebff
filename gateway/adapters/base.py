"""What every wire API adapter provides. The rest of the gateway is API-neutral and talks to
the three APIs (chat completions, messages, responses) only through this interface."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from gateway.errors import GatewayError, InvalidRequest
from gateway.sse import Frame, encode_frame

JSON = dict[str, Any]


def decode_json_object(body: bytes) -> JSON:
    """The request body as a JSON object, or `InvalidRequest` saying what is wrong with it."""
    if not body.strip():
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"The request body must be a JSON object, not {type(value).__name__}."
        )
    return value


_TYPE_NAMES = {str: "a string", bool: "a boolean", int: "an integer", float: "a number",
               list: "an array", dict: "an object"}


def check_field(body: Mapping[str, Any], name: str, *types: type, required: bool = False,
                non_empty: bool = False) -> None:
    """Raise `InvalidRequest` when `body[name]` is missing (if required) or of the wrong type.

    `bool` is not accepted where a number is expected, although Python treats it as an int.
    """
    if name not in body or body[name] is None:
        if required:
            raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
        return
    value = body[name]
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        expected = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
        raise InvalidRequest(
            f"Invalid type for '{name}': expected {expected}, got {type(value).__name__}.",
            param=name,
        )
    if non_empty and not value:
        raise InvalidRequest(f"'{name}' must not be empty.", param=name)


def check_list_of_objects(body: Mapping[str, Any], name: str) -> None:
    for index, item in enumerate(body[name]):
        if not isinstance(item, dict):
            raise InvalidRequest(
                f"Invalid type for '{name}[{index}]': expected an object, "
                f"got {type(item).__name__}.",
                param=f"{name}[{index}]",
            )


class Adapter:
    """One wire API. Subclasses live one per module, each holding all of its API's quirks."""

    #: The surface name used as default target and in events: chat.completions|messages|responses.
    surface: ClassVar[str]
    #: Which provider kind serves this API: "openai" or "anthropic".
    provider_kind: ClassVar[str]
    #: Path of the endpoint below the provider's base URL.
    upstream_path: ClassVar[str]

    def validate(self, body: JSON) -> None:
        """Raise `InvalidRequest` for a body the API would reject for shape or type reasons."""
        raise NotImplementedError

    def is_stream(self, body: Mapping[str, Any]) -> bool:
        return body.get("stream") is True

    def error_body(self, error: GatewayError) -> JSON:
        """`error` in this API's own error shape (SPEC §11)."""
        raise NotImplementedError

    def stream_error_frame(self, error: GatewayError, extra: Mapping[str, Any] | None = None
                           ) -> bytes:
        """The frame that ends a stream with `error`, so SDKs raise instead of hanging or
        silently accepting a cut stream."""
        raise NotImplementedError

    def is_terminal(self, frame: Frame) -> bool:
        """Whether `frame` is the API's normal last frame (a stream must end with one)."""
        raise NotImplementedError


class OpenAIErrorShape:
    """`{"error": {"message", "type", "param", "code"}}`, shared by chat and responses."""

    def error_body(self, error: GatewayError) -> JSON:
        body: JSON = {
            "error": {
                "message": error.message,
                "type": error.error_type,
                "param": error.param,
                "code": error.code,
            }
        }
        body.update(error.extra)
        return body


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


__all__ = [
    "JSON", "Adapter", "OpenAIErrorShape", "check_field", "check_list_of_objects",
    "decode_json_object", "dumps", "encode_frame",
]
