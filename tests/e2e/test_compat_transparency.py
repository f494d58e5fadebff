"""The /v1 surface is transparent (docs/governed-surface.md, docs/reference.md): the upstream gets
the exact bytes the client sent, and the upstream's own error answers reach the client untouched."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from e2e.harness import RunningGateway
from e2e.support import (
    CHAT_MESSAGES,
    CHAT_PATH,
    COUNT_TOKENS_PATH,
    MESSAGES_PATH,
    RESPONSES_PATH,
    SDK_TIMEOUT,
    BodyRecorder,
    anthropic_client,
    openai_client,
    scenario,
)
from mock_upstream import MockUpstream

from gateway.upstream import echo

#: Valid bodies written the way no JSON library would re-serialise them: odd spacing, escaped
#: and raw non-ASCII, a float written with an exponent, a duplicate key, unknown fields.
ODD_BODIES = {
    CHAT_PATH: (b'{ "model" :"gpt-x",\n\t"messages":[{"role":"user","content":"caf\\u00e9 \xc3\xa9"}],'
                b' "temperature": 1.0E0, "x-unknown": {"nested": [1, 2.50]}, "n": 1, "n": 1 }'),
    RESPONSES_PATH: b'{"input" : "caf\\u00e9",   "model":"gpt-x","metadata":{"k":"v"}}  ',
    MESSAGES_PATH: (b'{"max_tokens":64,"model":"claude-x","messages":[{"content":'
                    b'[{"type":"text","text":"\\ud83d\\ude00 hi"}],"role":"user"}],"top_k":5}'),
    COUNT_TOKENS_PATH: b'\n{"messages":[{"role":"user","content":"x"}],\n"model":"claude-x"}\n',
}


@pytest.mark.parametrize("path", list(ODD_BODIES))
def test_upstream_receives_the_exact_bytes_the_client_sent(
        gateway: RunningGateway, mock: MockUpstream, path: str) -> None:
    response = httpx2.post(gateway.url + path, content=ODD_BODIES[path],
                          headers={"authorization": f"Bearer {gateway.key}",
                                   "content-type": "application/json"},
                          timeout=SDK_TIMEOUT)
    assert response.status_code == 200, response.text
    [request] = mock.requests
    assert request.body == ODD_BODIES[path]


def test_sdk_request_bodies_arrive_byte_for_byte(gateway: RunningGateway,
                                                 mock: MockUpstream) -> None:
    recorder = BodyRecorder()
    with openai_client(gateway, http_client=recorder.client()) as client:
        client.chat.completions.create(model="gpt-x", messages=CHAT_MESSAGES, temperature=0.25,
                                       extra_body={"gateway_ignores_me": [None, True]})
        list(client.chat.completions.create(model="gpt-x", messages=CHAT_MESSAGES,
                                            stream=True))
        client.responses.create(model="gpt-x", input="hi", instructions="Be brief.")
    with anthropic_client(gateway, http_client=recorder.client()) as claude:
        claude.messages.create(model="claude-x", max_tokens=8, messages=CHAT_MESSAGES,
                               system="Be brief.")
    assert len(recorder.bodies) == 4
    assert [r.body for r in mock.requests] == recorder.bodies


UPSTREAM_ERROR_CASES = [
    (path, status, stream)
    for path in (CHAT_PATH, RESPONSES_PATH, MESSAGES_PATH, COUNT_TOKENS_PATH)
    for status in (400, 429, 500, 503)
    for stream in ((False,) if path == COUNT_TOKENS_PATH else (False, True))
] + [(MESSAGES_PATH, 529, True)]


@pytest.mark.parametrize(("path", "status", "stream"), UPSTREAM_ERROR_CASES)
def test_upstream_error_status_body_and_retry_after_pass_through(
        gateway: RunningGateway, mock: MockUpstream, path: str, status: int, stream: bool) -> None:
    body: dict[str, Any] = {"model": "m", "messages": CHAT_MESSAGES, "max_tokens": 8,
                            "input": "hi"}
    if stream:
        body["stream"] = True
    response = httpx2.post(gateway.url + path, json=body,
                          headers={"x-api-key": gateway.key,
                                   **scenario(mode="status", status=status, retry_after="17",
                                              headers={"x-upstream-request-id": "req_123"})},
                          timeout=SDK_TIMEOUT)
    api = echo.api_for_path(path)
    # The mock sends json.dumps of the provider's own error body; it must arrive as is.
    assert response.status_code == status
    assert response.content == json.dumps(echo.error_body(api, status)).encode()
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-upstream-request-id"] == "req_123"
    assert response.headers.get("retry-after") == ("17" if status in (429, 503, 529) else None)
    assert len(mock.requests) == 1


def test_openai_sdk_raises_the_upstreams_own_errors(gateway: RunningGateway,
                                                    mock: MockUpstream) -> None:
    with openai_client(gateway) as client:
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(
                model="gpt-x", messages=CHAT_MESSAGES,
                extra_headers=scenario(mode="status", status=429, retry_after="7"))
        with pytest.raises(openai.InternalServerError) as failed:
            client.responses.create(model="gpt-x", input="hi", stream=True,
                                    extra_headers=scenario(mode="status", status=500))
    assert limited.value.status_code == 429
    assert limited.value.response.headers["retry-after"] == "7"
    assert limited.value.body == echo.error_body("chat", 429)["error"]
    assert limited.value.code == "rate_limit_exceeded"
    assert failed.value.status_code == 500
    assert failed.value.body == echo.error_body("responses", 500)["error"]
    assert len(mock.requests) == 2


def test_anthropic_sdk_raises_the_upstreams_own_errors(gateway: RunningGateway,
                                                       mock: MockUpstream) -> None:
    with anthropic_client(gateway) as claude:
        with pytest.raises(anthropic.RateLimitError) as limited:
            claude.messages.create(model="claude-x", max_tokens=8, messages=CHAT_MESSAGES,
                                   extra_headers=scenario(mode="status", status=429,
                                                          retry_after="9"))
        with pytest.raises(anthropic.InternalServerError) as failed, \
                claude.messages.stream(model="claude-x", max_tokens=8, messages=CHAT_MESSAGES,
                                       extra_headers=scenario(mode="status",
                                                              status=500)) as stream:
            stream.get_final_message()
        with pytest.raises(anthropic.APIStatusError) as overloaded:
            claude.messages.count_tokens(model="claude-x", messages=CHAT_MESSAGES,
                                         extra_headers=scenario(mode="status", status=529))
    assert limited.value.status_code == 429
    assert limited.value.response.headers["retry-after"] == "9"
    assert limited.value.body == echo.error_body("messages", 429)
    assert failed.value.status_code == 500
    assert failed.value.body == echo.error_body("messages", 500)
    assert overloaded.value.status_code == 529
    assert overloaded.value.body == echo.error_body("messages", 529)
    assert len(mock.requests) == 3


def test_query_string_is_forwarded(gateway: RunningGateway, mock: MockUpstream) -> None:
    # Some deployments put e.g. an `api-version` in the query; a transparent proxy keeps it.
    with openai_client(gateway) as client, anthropic_client(gateway) as claude:
        client.chat.completions.create(model="gpt-x", messages=CHAT_MESSAGES,
                                       extra_query={"api-version": "2024-10-21"})
        client.models.list(extra_query={"limit": "5"})
        claude.messages.create(model="claude-x", max_tokens=8, messages=CHAT_MESSAGES,
                               extra_query={"beta": "true"})
    assert [r.path for r in mock.requests] == [
        "/v1/chat/completions?api-version=2024-10-21", "/v1/models?limit=5",
        "/v1/messages?beta=true"]
