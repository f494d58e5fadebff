"""Streams that go wrong, streams that take long, and clients that leave (docs/reference.md,
docs/configuration.md).

A failure mid-stream must end the stream with the API's own error frame, which the SDKs turn
into an exception; a slow but healthy stream must never be cut by a server timeout; and a client
that goes away must make the gateway drop the upstream request at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import openai
import pytest
import trio
from e2e.harness import GatewayFactory, RunningGateway
from e2e.support import (
    CHAT_MESSAGES,
    CHAT_PATH,
    MESSAGES_PATH,
    RESPONSES_PATH,
    SDK_TIMEOUT,
    STREAMING_PATHS,
    VALID_BODIES,
    anthropic_client,
    async_openai_client,
    openai_client,
    scenario,
    sse_events,
)
from mock_upstream import MockUpstream
from quart_trio import QuartTrio
from sdk_streams import SDK_STREAM_GENERATORS

from gateway.upstream import echo

pytestmark = SDK_STREAM_GENERATORS


def is_terminal(path: str, event: str | None, data: str) -> bool:
    """Whether a frame is the normal last frame of the API's stream."""
    if path == CHAT_PATH:
        return data == "[DONE]"
    if path == MESSAGES_PATH:
        return event == "message_stop"
    return event == "response.completed"


def stream_body(path: str) -> bytes:
    return json.dumps({**VALID_BODIES[path], "stream": True}).encode()


def stream_raw(gateway: RunningGateway, path: str, headers: dict[str, str] | None = None,
               timeout: float = SDK_TIMEOUT) -> httpx2.Response:
    response = httpx2.post(gateway.url + path, content=stream_body(path), timeout=timeout,
                          headers={"x-api-key": gateway.key, "content-type": "application/json",
                                   **(headers or {})})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return response


def error_frame(path: str, events: list[tuple[str | None, str]]) -> dict[str, Any]:
    """The stream's last frame, checked to be the API's own error frame; its error object."""
    event, data = events[-1]
    payload = json.loads(data)
    if path == CHAT_PATH:
        # OpenAI reports a mid-stream failure as a data frame holding `error`.
        assert event is None
        error = payload["error"]
        assert set(error) == {"message", "type", "param", "code"}
    elif path == MESSAGES_PATH:
        assert event == "error" and payload["type"] == "error"
        error = payload["error"]
        assert set(error) == {"type", "message", "code", "details"}
    else:
        assert event == "error" and payload["type"] == "error"
        # The spec's flat error event, plus the nested `error` the openai SDK raises on.
        error = payload
        assert {"code", "message", "param", "sequence_number"} <= set(payload)
        assert payload["error"]["code"] == payload["code"]
    assert not any(is_terminal(path, e, d) for e, d in events)
    return dict(error)


@pytest.mark.parametrize("mode", ["reset_midstream", "malformed_sse"])
@pytest.mark.parametrize("path", STREAMING_PATHS)
def test_broken_stream_ends_with_the_apis_error_frame(gateway: RunningGateway,
                                                      mock: MockUpstream, path: str,
                                                      mode: str) -> None:
    response = stream_raw(gateway, path, scenario(mode=mode, after_frames=2))
    events = sse_events(response.content)
    assert len(events) == 3  # the two good frames, relayed, then the error
    assert error_frame(path, events)["code"] == "upstream_unavailable"


def truncating_upstream() -> httpx2.MockTransport:
    """An upstream whose streams end cleanly (no reset, valid frames) but before the API's
    terminal frame, as a crashed provider behind a proxy can produce."""
    def handle(request: httpx2.Request) -> httpx2.Response:
        answer = echo.answer(request.method, request.url.path, dict(request.headers),
                             request.content)
        assert answer.frames is not None
        frames = list(answer.frames)[:-1]
        return httpx2.Response(answer.status, headers=answer.headers, content=b"".join(frames))

    return httpx2.MockTransport(handle)


@pytest.fixture
def truncating_gateway(gateway_factory: GatewayFactory) -> RunningGateway:
    # No provider keys: the gateway sends both APIs to its in-process upstream transport.
    return gateway_factory({"providers": {}}, echo_transport=truncating_upstream())


@pytest.mark.parametrize("path", STREAMING_PATHS)
def test_stream_cut_before_its_terminal_frame_ends_with_an_error_frame(
        truncating_gateway: RunningGateway, path: str) -> None:
    events = sse_events(stream_raw(truncating_gateway, path).content)
    assert len(events) > 2
    assert error_frame(path, events)["code"] == "upstream_unavailable"


def test_sdks_raise_on_a_cut_stream(truncating_gateway: RunningGateway) -> None:
    with openai_client(truncating_gateway) as client:
        with pytest.raises(openai.APIError, match="ended before it was complete"):
            list(client.chat.completions.create(model="gpt-x", messages=CHAT_MESSAGES,
                                                stream=True))
        with pytest.raises(openai.APIError, match="ended before it was complete"):
            list(client.responses.create(model="gpt-x", input="hi", stream=True))
    with anthropic_client(truncating_gateway) as claude, \
            pytest.raises(anthropic.APIStatusError, match="ended before it was complete"), \
            claude.messages.stream(model="claude-x", max_tokens=8,
                                   messages=CHAT_MESSAGES) as stream:
        stream.get_final_message()


SDK_STREAM_CALLS: dict[str, Callable[[openai.OpenAI, anthropic.Anthropic, dict[str, str]], Any]] = {
    CHAT_PATH: lambda client, _, headers: list(client.chat.completions.create(
        model="gpt-x", messages=CHAT_MESSAGES, stream=True, extra_headers=headers)),
    RESPONSES_PATH: lambda client, _, headers: list(client.responses.create(
        model="gpt-x", input="hi", stream=True, extra_headers=headers)),
    MESSAGES_PATH: lambda _, claude, headers: list(claude.messages.create(
        model="claude-x", max_tokens=8, messages=CHAT_MESSAGES, stream=True,
        extra_headers=headers)),
}


@pytest.mark.parametrize("mode", ["reset_midstream", "malformed_sse"])
@pytest.mark.parametrize("path", STREAMING_PATHS)
def test_sdks_raise_on_a_broken_stream(gateway: RunningGateway, mock: MockUpstream, path: str,
                                       mode: str) -> None:
    expected: type[Exception] = anthropic.APIStatusError if path == MESSAGES_PATH \
        else openai.APIError
    with openai_client(gateway) as client, anthropic_client(gateway) as claude, \
            pytest.raises(expected) as caught:
        SDK_STREAM_CALLS[path](client, claude, scenario(mode=mode))
    assert "upstream" in str(caught.value).lower()


def test_idle_or_overlong_upstream_stream_ends_with_upstream_timeout(
        gateway_factory: GatewayFactory, mock: MockUpstream) -> None:
    # Frames 0.2 s apart stay five times within `idle`, so a loaded machine's pauses do not
    # turn the `total` case into an idle one.
    impatient = gateway_factory({"timeouts": {"idle": 1.0, "total": 2.5}})
    # A first stream opens the upstream connection, so that the timed ones below measure the
    # upstream's silence and not a fresh gateway's first connection on a busy machine.
    assert sse_events(stream_raw(impatient, CHAT_PATH).content)[-1] == (None, "[DONE]")
    for path in STREAMING_PATHS:
        # Silent for longer than `idle` before a frame.
        response = stream_raw(impatient, path, scenario(mode="slow", delay=2.5))
        assert error_frame(path, sse_events(response.content))["code"] == "upstream_timeout"
    # Never idle for long, but longer than `total` in all: ~33 frames x 0.2 s would take 6.6 s.
    started = time.monotonic()
    response = stream_raw(impatient, CHAT_PATH,
                          scenario(mode="slow", delay=0.2, chunks=["x"] * 30))
    events = sse_events(response.content)
    assert error_frame(CHAT_PATH, events)["code"] == "upstream_timeout"
    assert 2.4 < time.monotonic() - started < 5.5
    assert 3 < len(events) < 25
    # Each time, the gateway gave up on the upstream and closed the exchange.
    assert mock.wait_for_disconnect(timeout=10, count=len(STREAMING_PATHS) + 1)


def test_stream_longer_than_quarts_response_timeout_is_not_cut(
        gateway_factory: GatewayFactory, mock: MockUpstream) -> None:
    def short_response_timeout(app: QuartTrio) -> None:
        app.config["RESPONSE_TIMEOUT"] = 0.5

    patient = gateway_factory(configure_app=short_response_timeout)
    chunks = [f"piece {n} " for n in range(6)]
    started = time.monotonic()
    with openai_client(patient) as client:
        stream = client.chat.completions.create(
            model="gpt-x", messages=CHAT_MESSAGES, stream=True,
            extra_headers=scenario(mode="slow", delay=0.2, chunks=chunks))
        deltas = [c.choices[0].delta.content for c in stream if c.choices]
    elapsed = time.monotonic() - started
    assert elapsed > 1.0  # (6 chunks + 3 other frames) x 0.2 s: well past RESPONSE_TIMEOUT
    assert deltas == ["", *chunks, None]
    assert mock.disconnects == []


@pytest.mark.parametrize("path", STREAMING_PATHS)
def test_client_leaving_mid_stream_cancels_the_upstream_request(
        gateway: RunningGateway, mock: MockUpstream, path: str) -> None:
    with httpx2.Client(timeout=SDK_TIMEOUT) as http, http.stream(
            "POST", gateway.url + path, content=stream_body(path),
            headers={"x-api-key": gateway.key, "content-type": "application/json",
                     **scenario(mode="slow", delay=0.3, chunks=["x"] * 30)}) as response:
        assert response.status_code == 200
        first = next(response.iter_raw())
        assert first.endswith(b"\n\n")
        left_at = time.monotonic()
    # Promptly, not when the 9 s stream would have ended (a loaded machine takes its time).
    assert mock.wait_for_disconnect(timeout=5)
    assert time.monotonic() - left_at < 3.0
    assert mock.disconnects == [path]


async def test_async_sdk_closing_a_stream_cancels_the_upstream_request(
        gateway: RunningGateway, mock: MockUpstream) -> None:
    async with async_openai_client(gateway) as client:
        stream = await client.chat.completions.create(
            model="gpt-x", messages=CHAT_MESSAGES, stream=True,
            extra_headers=scenario(mode="slow", delay=0.3, chunks=["x"] * 30))
        async for _first in stream:
            break
        await stream.close()
        left_at = trio.current_time()
        assert await mock.await_disconnect(5)
    assert trio.current_time() - left_at < 3.0  # not when the 9 s stream would have ended


def test_client_leaving_while_waiting_for_headers_cancels_the_upstream_request(
        gateway: RunningGateway, mock: MockUpstream) -> None:
    with pytest.raises(httpx2.ReadTimeout):
        httpx2.post(gateway.url + CHAT_PATH, content=json.dumps(VALID_BODIES[CHAT_PATH]),
                   headers={"x-api-key": gateway.key, **scenario(mode="hang")}, timeout=0.5)
    left_at = time.monotonic()
    assert mock.wait_for_disconnect(timeout=5)
    assert time.monotonic() - left_at < 3.0  # not never: the upstream hangs for good
