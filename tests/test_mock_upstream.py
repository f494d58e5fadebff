"""The mock upstream over real sockets: what a client observes in each mode."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest
import trio
from mock_upstream import MALFORMED_FRAME, MockUpstream, Scenario, ScenarioError

from gateway.upstream import echo

MESSAGES: list[Any] = [{"role": "user", "content": "hello there"}]
CHAT = {"model": "gpt-x", "messages": MESSAGES}
ANTHROPIC = {"model": "claude-x", "max_tokens": 50, "messages": MESSAGES}


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockUpstream]:
    with MockUpstream() as server:
        yield server
        assert server.errors == []


@pytest.fixture
def mock(upstream: MockUpstream) -> MockUpstream:
    upstream.reset()
    return upstream


@pytest.fixture
def http(mock: MockUpstream) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=mock.url, timeout=5) as client:
        yield client


def scenario(**fields: Any) -> dict[str, str]:
    return {"x-mock-scenario": json.dumps(fields)}


def data_lines(raw: bytes) -> list[str]:
    return [line.removeprefix("data: ") for line in raw.decode().split("\n")
            if line.startswith("data: ")]


def test_normal_answer_and_the_recorded_request(mock: MockUpstream, http: httpx2.Client) -> None:
    response = http.post("/v1/chat/completions", json=CHAT, headers={"X-Custom": "yes"})
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "echo: hello there"
    [recorded] = mock.requests
    assert (recorded.method, recorded.path) == ("POST", "/v1/chat/completions")
    assert recorded.headers["x-custom"] == "yes"
    assert recorded.json == CHAT and json.loads(recorded.body) == CHAT


def test_keep_alive_serves_many_requests_on_one_connection(mock: MockUpstream,
                                                           http: httpx2.Client) -> None:
    started = time.perf_counter()
    for _ in range(50):
        assert http.post("/v1/messages", json=ANTHROPIC).status_code == 200
    elapsed = time.perf_counter() - started
    assert mock.connections == 1
    assert len(mock.requests) == 50
    assert elapsed < 5  # typically ~0.1 s: no per-request sleeps


def test_chunks_from_the_scenario_header_are_the_streamed_deltas(http: httpx2.Client) -> None:
    chunks = ["never ", "split ", "a wo", "rd"]
    body = {**CHAT, "stream": True}
    response = http.post("/v1/chat/completions", json=body, headers=scenario(chunks=chunks))
    events = [json.loads(line) for line in data_lines(response.content) if line != "[DONE]"]
    deltas = [e["choices"][0]["delta"].get("content") for e in events]
    assert deltas == ["", *chunks, None]


def test_usage_override(http: httpx2.Client) -> None:
    response = http.post("/v1/messages", json=ANTHROPIC,
                         headers=scenario(usage={"input_tokens": 7, "output_tokens": 3},
                                          text="fixed"))
    body = response.json()
    assert body["content"][0]["text"] == "fixed"
    assert (body["usage"]["input_tokens"], body["usage"]["output_tokens"]) == (7, 3)


@pytest.mark.parametrize(("path", "request_body", "expected_error"), [
    ("/v1/chat/completions", CHAT, {"message": "The upstream answered 429.", "type": "requests",
                                    "param": None, "code": "rate_limit_exceeded"}),
    ("/v1/messages", ANTHROPIC, {"type": "rate_limit_error",
                                 "message": "The upstream answered 429."}),
])
def test_status_429_with_retry_after(http: httpx2.Client, path: str, request_body: Any,
                                     expected_error: dict[str, Any]) -> None:
    response = http.post(path, json=request_body,
                         headers=scenario(mode="status", status=429, retry_after=7))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"] == expected_error
    # The connection stays usable after an error answer.
    assert http.post(path, json=request_body).status_code == 200


def test_model_name_selects_the_mode(http: httpx2.Client) -> None:
    response = http.post("/v1/messages", json={**ANTHROPIC, "model": "mock-status-529"})
    assert response.status_code == 529
    assert response.json() == {"type": "error", "error": {
        "type": "overloaded_error", "message": "The upstream answered 529."}}
    assert Scenario.from_model("mock-reset-midstream") == Scenario(mode="reset_midstream")
    assert Scenario.from_model("gpt-4o") is None
    with pytest.raises(ScenarioError):
        Scenario.from_model("mock-explode")


def test_bad_scenario_is_a_400_naming_the_problem(http: httpx2.Client) -> None:
    response = http.post("/v1/messages", json=ANTHROPIC, headers=scenario(mode="explode"))
    assert response.status_code == 400
    assert "explode" in response.json()["error"]["message"]


def test_slow_stream_delays_every_frame(http: httpx2.Client) -> None:
    body = {**ANTHROPIC, "stream": True}
    started = time.perf_counter()
    arrivals = []
    with http.stream("POST", "/v1/messages", json=body,
                     headers=scenario(mode="slow", delay=0.05, chunks=["a", "b"])) as response:
        for _ in response.iter_lines():
            arrivals.append(time.perf_counter() - started)
    frames = 6 + 2
    assert arrivals[-1] >= frames * 0.05
    # Frames trickle in: the first one long before the last.
    assert arrivals[-1] - arrivals[0] >= (frames - 1) * 0.05 * 0.8


def test_reset_midstream_cuts_the_connection_after_n_frames(mock: MockUpstream,
                                                            http: httpx2.Client) -> None:
    body = {**CHAT, "stream": True}
    received = bytearray()
    with pytest.raises(httpx2.ReadError) as caught:
        with http.stream("POST", "/v1/chat/completions", json=body,
                         headers=scenario(mode="reset_midstream", after_frames=2)) as response:
            assert response.status_code == 200
            for piece in response.iter_raw():
                received += piece
    assert "reset" in str(caught.value).lower()
    assert len(data_lines(bytes(received))) == 2
    # The mock itself aborted: that is not a client disconnect.
    assert mock.disconnects == []


def test_reset_midstream_on_a_json_answer(http: httpx2.Client) -> None:
    with pytest.raises((httpx2.ReadError, httpx2.RemoteProtocolError)):
        http.post("/v1/messages", json=ANTHROPIC, headers=scenario(mode="reset_midstream"))


def test_malformed_sse_sends_a_data_line_that_is_not_json(http: httpx2.Client) -> None:
    body = {**ANTHROPIC, "stream": True}
    response = http.post("/v1/messages", json=body,
                         headers=scenario(mode="malformed_sse", after_frames=3))
    lines = data_lines(response.content)
    assert [json.loads(line)["type"] for line in lines[:3]] == [
        "message_start", "content_block_start", "ping"]
    assert lines[3:] == [MALFORMED_FRAME.decode().removeprefix("data: ").strip()]
    with pytest.raises(ValueError):
        json.loads(lines[3])


def test_malformed_json_answer_is_cut(http: httpx2.Client) -> None:
    response = http.post("/v1/chat/completions", json=CHAT, headers=scenario(mode="malformed_sse"))
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()


def test_hang_times_out_and_the_client_leaving_is_recorded(mock: MockUpstream,
                                                           http: httpx2.Client) -> None:
    started = time.perf_counter()
    with pytest.raises(httpx2.ReadTimeout):
        http.post("/v1/chat/completions", json=CHAT, headers=scenario(mode="hang"), timeout=0.3)
    assert 0.3 <= time.perf_counter() - started < 2
    assert len(mock.requests) == 1
    # httpx2 closes the timed-out connection: the mock sees the client go away.
    assert mock.wait_for_disconnect(timeout=5)
    assert mock.disconnects == ["/v1/chat/completions"]


def test_close_before_headers(http: httpx2.Client) -> None:
    with pytest.raises(httpx2.RemoteProtocolError, match="without sending"):
        http.post("/v1/messages", json=ANTHROPIC, headers=scenario(mode="close_before_headers"))


def test_client_closing_mid_stream_is_recorded(mock: MockUpstream, http: httpx2.Client) -> None:
    body = {**CHAT, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body,
                     headers=scenario(mode="slow", delay=0.2)) as response:
        first = next(response.iter_raw())
    assert first.startswith(b"data: ")
    assert mock.wait_for_disconnect(timeout=5)
    assert mock.disconnects == ["/v1/chat/completions"]


def test_a_complete_stream_is_not_a_disconnect(mock: MockUpstream, http: httpx2.Client) -> None:
    response = http.post("/v1/responses", json={"model": "m", "input": "hi", "stream": True})
    assert data_lines(response.content)
    assert not mock.wait_for_disconnect(timeout=0.2)


def test_reset_clears_the_records(mock: MockUpstream, http: httpx2.Client) -> None:
    http.get("/v1/models")
    assert mock.requests
    mock.reset()
    assert (mock.requests, mock.disconnects, mock.connections) == ([], [], 0)


# -- the official SDKs over real sockets ---------------------------------------------------------

def test_openai_sdk_streams_from_the_mock(mock: MockUpstream) -> None:
    client = openai.OpenAI(base_url=mock.url + "/v1", api_key="x", max_retries=0,
                           _strict_response_validation=True)
    with client.chat.completions.create(model="gpt-x", messages=MESSAGES,
                                        stream=True, stream_options={"include_usage": True},
                                        extra_headers=scenario(chunks=["one ", "two"])) as stream:
        chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    assert mock.requests[0].headers["authorization"] == "Bearer x"


def test_openai_sdk_sees_the_rate_limit(mock: MockUpstream) -> None:
    client = openai.OpenAI(base_url=mock.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        client.responses.create(model="gpt-x", input="hi",
                                extra_headers=scenario(mode="status", status=429))
    assert caught.value.response.headers["retry-after"] == "1"


def test_anthropic_sdk_stream_helper_against_the_mock(mock: MockUpstream) -> None:
    client = anthropic.Anthropic(base_url=mock.url, api_key="x", max_retries=0,
                                 _strict_response_validation=True)
    with client.messages.stream(model="claude-x", max_tokens=50,
                                messages=MESSAGES) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == "echo: hello there"
    # This SDK version sends its key as a bearer token, beside its API version header.
    recorded = mock.requests[0].headers
    assert recorded["authorization"] == "Bearer x" and "anthropic-version" in recorded


def test_anthropic_sdk_reports_a_broken_stream(mock: MockUpstream) -> None:
    client = anthropic.Anthropic(base_url=mock.url, api_key="x", max_retries=0)
    # Mid-stream the SDK lets the transport error through unwrapped.
    with pytest.raises(httpx2.ReadError, match="reset"):
        with client.messages.stream(model="mock-reset-midstream", max_tokens=50,
                                    messages=MESSAGES) as stream:
            stream.get_final_message()


# -- from trio tests ---------------------------------------------------------------------------------

async def test_usable_from_trio_with_an_async_client() -> None:
    async with MockUpstream() as server, httpx2.AsyncClient(base_url=server.url) as client:
        body = {**ANTHROPIC, "stream": True}
        async with client.stream("POST", "/v1/messages", json=body,
                                 headers=scenario(mode="slow", delay=0.01)) as response:
            pieces = [piece async for piece in response.aiter_raw()]
        with trio.move_on_after(0.2) as waited:
            await client.post("/v1/messages", json=ANTHROPIC, headers=scenario(mode="hang"))
        assert waited.cancelled_caught
        assert await server.await_disconnect(5)
        counted = await client.post("/v1/messages/count_tokens",
                                     json={"model": "m", "messages": MESSAGES})
    assert b"".join(pieces).count(b"event: ") == 6 + len(echo.split_text("echo: hello there"))
    assert counted.json() == {"input_tokens": echo.estimate_tokens("hello there")}
    assert server.disconnects == ["/v1/messages"]
