"""Helpers shared by the end-to-end tests: SDK clients pointed at a running gateway, mock
scenarios, and readers for the two error shapes and for raw event streams."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import openai
from e2e.harness import RunningGateway

#: Every request through the SDKs is bounded, so a gateway bug shows up as a failure, not a hang.
SDK_TIMEOUT = 10.0

CHAT_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"
MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"

PROMPT = "Which river flows through Paris?"
CHAT_MESSAGES: list[Any] = [{"role": "user", "content": PROMPT}]

#: A minimal valid body per endpoint.
VALID_BODIES: dict[str, dict[str, Any]] = {
    CHAT_PATH: {"model": "gpt-x", "messages": CHAT_MESSAGES},
    RESPONSES_PATH: {"model": "gpt-x", "input": PROMPT},
    MESSAGES_PATH: {"model": "claude-x", "max_tokens": 64, "messages": CHAT_MESSAGES},
    COUNT_TOKENS_PATH: {"model": "claude-x", "messages": CHAT_MESSAGES},
}
#: The endpoints that stream, each with the API the mock and the error shape use.
STREAMING_PATHS = (CHAT_PATH, RESPONSES_PATH, MESSAGES_PATH)


def is_anthropic_path(path: str) -> bool:
    return path.startswith("/v1/messages")


def scenario(**fields: Any) -> dict[str, str]:
    """The header that makes the mock upstream behave as `fields` say."""
    return {"x-mock-scenario": json.dumps(fields)}


def openai_client(gateway: RunningGateway, key: str | None = None, **options: Any
                  ) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key or gateway.key, max_retries=0,
                         timeout=SDK_TIMEOUT, _strict_response_validation=True, **options)


def async_openai_client(gateway: RunningGateway, key: str | None = None, **options: Any
                        ) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key or gateway.key,
                              max_retries=0, timeout=SDK_TIMEOUT,
                              _strict_response_validation=True, **options)


def anthropic_client(gateway: RunningGateway, key: str | None = None, **options: Any
                     ) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key or gateway.key, max_retries=0,
                               timeout=SDK_TIMEOUT, _strict_response_validation=True, **options)


def async_anthropic_client(gateway: RunningGateway, key: str | None = None, **options: Any
                           ) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gateway.url, api_key=key or gateway.key,
                                    max_retries=0, timeout=SDK_TIMEOUT,
                                    _strict_response_validation=True, **options)


class BodyRecorder:
    """An httpx2 request hook that keeps the exact body bytes each SDK request carried."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def __call__(self, request: httpx2.Request) -> None:
        self.bodies.append(request.read())

    def client(self) -> httpx2.Client:
        return httpx2.Client(event_hooks={"request": [self]}, timeout=SDK_TIMEOUT)


def error_of(path: str, body: Any) -> dict[str, Any]:
    """The `error` object of a gateway error body, after checking the API's envelope
    (docs/reference.md): OpenAI `{"error": {message, type, param, code}}`; Anthropic
    `{"type": "error", "error": {type, message, code, details: {error_code}}}`."""
    assert isinstance(body, dict), body
    error = body["error"]
    if is_anthropic_path(path):
        assert body["type"] == "error", body
        assert set(error) == {"type", "message", "code", "details"}, body
    else:
        assert set(error) == {"message", "type", "param", "code"}, body
    assert isinstance(error["message"], str) and error["message"], body
    return dict(error)


def sse_events(raw: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) of each frame of a raw event stream."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        name = None
        data = []
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        events.append((name, "\n".join(data)))
    return events
