"""The official SDKs, sync and async, through the gateway's /v1 surface to the mock provider.

Each test makes the mock answer with text, chunks and usage chosen by the test (the
`x-mock-scenario` header, which the gateway forwards like any other client header) and checks
that what the SDK parsed is exactly that, and that the mock saw the request the SDK sent.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from e2e.harness import RunningGateway
from e2e.support import (
    CHAT_MESSAGES,
    PROMPT,
    anthropic_client,
    async_anthropic_client,
    async_openai_client,
    openai_client,
    scenario,
)
from mock_upstream import MockUpstream
from sdk_streams import SDK_STREAM_GENERATORS

from gateway.upstream import echo

#: The OpenAI SDK leaves its own SSE async generators to the garbage collector after `[DONE]`,
#: which trio reports as a ResourceWarning. That is the SDK's cleanup, not the gateway's.
pytestmark = SDK_STREAM_GENERATORS

TEXT = "The Seine flows through Paris."
CHUNKS = ["The Se", "ine flo", "ws through ", "Paris."]
USAGE = {"input_tokens": 17, "output_tokens": 5}
ANSWER = scenario(text=TEXT, usage=USAGE)
STREAMED = scenario(chunks=CHUNKS, usage=USAGE)
CHAT_USAGE = {"prompt_tokens": 17, "completion_tokens": 5, "total_tokens": 22}


def recorded(mock: MockUpstream, path: str) -> Any:
    """The one request the mock got, checked to be a POST on `path`; its JSON body."""
    [request] = mock.requests
    assert (request.method, request.path) == ("POST", path)
    return request.json


# -- chat completions ---------------------------------------------------------------------------

def check_chat_completion(completion: Any) -> None:
    assert completion.object == "chat.completion" and completion.model == "gpt-x"
    assert completion.choices[0].message.content == TEXT
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (17, 5, 22)


def test_chat_completion_sync(gateway: RunningGateway, mock: MockUpstream) -> None:
    with openai_client(gateway) as client:
        completion = client.chat.completions.create(model="gpt-x", messages=CHAT_MESSAGES,
                                                    extra_headers=ANSWER)
    check_chat_completion(completion)
    assert recorded(mock, "/v1/chat/completions") == {"model": "gpt-x", "messages": CHAT_MESSAGES}


async def test_chat_completion_async(gateway: RunningGateway, mock: MockUpstream) -> None:
    async with async_openai_client(gateway) as client:
        completion = await client.chat.completions.create(model="gpt-x", messages=CHAT_MESSAGES,
                                                          extra_headers=ANSWER)
    check_chat_completion(completion)
    assert recorded(mock, "/v1/chat/completions")["messages"] == CHAT_MESSAGES


def check_chat_chunks(chunks: list[Any], include_usage: bool) -> None:
    deltas = [c.choices[0].delta.content for c in chunks if c.choices]
    assert deltas == ["", *CHUNKS, None]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usages = [c.usage.model_dump(include=set(CHAT_USAGE)) if c.usage else None for c in chunks]
    if include_usage:
        # The usage chunk is the last one and has no choices.
        assert chunks[-1].choices == []
        assert usages == [None] * (len(chunks) - 1) + [CHAT_USAGE]
    else:
        assert usages == [None] * len(chunks)


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_stream_sync(gateway: RunningGateway, mock: MockUpstream,
                          include_usage: bool) -> None:
    options: Any = {"include_usage": True} if include_usage else None
    with openai_client(gateway) as client:
        stream = client.chat.completions.create(model="gpt-x", messages=CHAT_MESSAGES,
                                                stream=True, stream_options=options,
                                                extra_headers=STREAMED)
        chunks = list(stream)
    check_chat_chunks(chunks, include_usage)
    assert recorded(mock, "/v1/chat/completions")["stream"] is True


@pytest.mark.parametrize("include_usage", [False, True])
async def test_chat_stream_async(gateway: RunningGateway, mock: MockUpstream,
                                 include_usage: bool) -> None:
    options: Any = {"include_usage": True} if include_usage else None
    async with async_openai_client(gateway) as client:
        stream = await client.chat.completions.create(model="gpt-x", messages=CHAT_MESSAGES,
                                                      stream=True, stream_options=options,
                                                      extra_headers=STREAMED)
        chunks = [chunk async for chunk in stream]
    check_chat_chunks(chunks, include_usage)
    assert recorded(mock, "/v1/chat/completions")["stream"] is True


# -- responses ----------------------------------------------------------------------------------

def check_response(response: Any) -> None:
    assert response.status == "completed" and response.model == "gpt-x"
    assert response.output_text == TEXT
    assert (response.usage.input_tokens, response.usage.output_tokens,
            response.usage.total_tokens) == (17, 5, 22)


def test_responses_sync(gateway: RunningGateway, mock: MockUpstream) -> None:
    with openai_client(gateway) as client:
        response = client.responses.create(model="gpt-x", input=PROMPT, extra_headers=ANSWER)
        check_response(response)
        stream = client.responses.create(model="gpt-x", input=PROMPT, stream=True,
                                         extra_headers=STREAMED)
        events = list(stream)
    check_response_events(events)
    assert [r.json["input"] for r in mock.requests] == [PROMPT, PROMPT]


async def test_responses_async(gateway: RunningGateway, mock: MockUpstream) -> None:
    async with async_openai_client(gateway) as client:
        response = await client.responses.create(model="gpt-x", input=PROMPT,
                                                 extra_headers=ANSWER)
        check_response(response)
        stream = await client.responses.create(model="gpt-x", input=PROMPT, stream=True,
                                               extra_headers=STREAMED)
        events = [event async for event in stream]
    check_response_events(events)
    assert [r.json.get("stream") for r in mock.requests] == [None, True]


def check_response_events(events: list[Any]) -> None:
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == CHUNKS
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    check_response(events[-1].response)


# -- models -------------------------------------------------------------------------------------

def test_models_list_sync(gateway: RunningGateway, mock: MockUpstream) -> None:
    with openai_client(gateway) as client:
        page = client.models.list()
    assert [(m.id, m.object) for m in page.data] == [(name, "model") for name in echo.ECHO_MODELS]
    assert [(r.method, r.path) for r in mock.requests] == [("GET", "/v1/models")]


async def test_models_list_async(gateway: RunningGateway, mock: MockUpstream) -> None:
    async with async_openai_client(gateway) as client:
        page = await client.models.list()
    assert [m.id for m in page.data] == list(echo.ECHO_MODELS)
    assert [(r.method, r.path) for r in mock.requests] == [("GET", "/v1/models")]


# -- anthropic messages -------------------------------------------------------------------------

def check_message(message: Any) -> None:
    assert message.type == "message" and message.model == "claude-x"
    assert [(block.type, block.text) for block in message.content] == [("text", TEXT)]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (17, 5)


def test_messages_sync(gateway: RunningGateway, mock: MockUpstream) -> None:
    with anthropic_client(gateway) as client:
        message = client.messages.create(model="claude-x", max_tokens=64,
                                         messages=CHAT_MESSAGES, extra_headers=ANSWER)
        check_message(message)
        with client.messages.stream(model="claude-x", max_tokens=64, messages=CHAT_MESSAGES,
                                    extra_headers=scenario(chunks=CHUNKS, usage=USAGE)) as stream:
            pieces = list(stream.text_stream)
            final = stream.get_final_message()
    assert pieces == CHUNKS
    # Chunks joined give TEXT, so the final message is the same message as the plain one.
    check_message(final)
    assert [r.json["max_tokens"] for r in mock.requests] == [64, 64]
    assert mock.requests[1].json["stream"] is True


async def test_messages_async(gateway: RunningGateway, mock: MockUpstream) -> None:
    async with async_anthropic_client(gateway) as client:
        message = await client.messages.create(model="claude-x", max_tokens=64,
                                               messages=CHAT_MESSAGES, extra_headers=ANSWER)
        check_message(message)
        async with client.messages.stream(model="claude-x", max_tokens=64,
                                          messages=CHAT_MESSAGES,
                                          extra_headers=STREAMED) as stream:
            pieces = [piece async for piece in stream.text_stream]
            final = await stream.get_final_message()
    assert pieces == CHUNKS
    check_message(final)
    assert [r.json.get("stream") for r in mock.requests] == [None, True]


COUNTED: dict[str, Any] = {"model": "claude-x", "system": "Answer in one word.",
                          "messages": CHAT_MESSAGES}


def test_count_tokens_sync(gateway: RunningGateway, mock: MockUpstream) -> None:
    with anthropic_client(gateway) as client:
        counted = client.messages.count_tokens(
            model="claude-x", system=COUNTED["system"], messages=CHAT_MESSAGES)
    sent = recorded(mock, "/v1/messages/count_tokens")
    assert sent == COUNTED
    # The mock counts with the echo's documented estimate; the SDK must get that number.
    assert counted.input_tokens == echo.input_tokens("messages", sent) > 0


async def test_count_tokens_async(gateway: RunningGateway, mock: MockUpstream) -> None:
    async with async_anthropic_client(gateway) as client:
        counted = await client.messages.count_tokens(
            model="claude-x", system=COUNTED["system"], messages=CHAT_MESSAGES)
    sent = recorded(mock, "/v1/messages/count_tokens")
    assert counted.input_tokens == echo.input_tokens("messages", sent) > 0
    assert json.loads(mock.requests[0].body) == COUNTED
