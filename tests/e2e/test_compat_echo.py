"""A gateway with no provider keys runs out of the box (docs/configuration.md): the built-in echo
answers all three APIs, and the SDKs parse every answer, streamed or not."""

from __future__ import annotations

from e2e.harness import RunningGateway
from e2e.support import (
    CHAT_MESSAGES,
    PROMPT,
    anthropic_client,
    async_anthropic_client,
    async_openai_client,
    openai_client,
)
from mock_upstream import MockUpstream
from sdk_streams import SDK_STREAM_GENERATORS

from gateway.upstream import echo

pytestmark = SDK_STREAM_GENERATORS

EXPECTED_TEXT = "echo: " + PROMPT
PROMPT_TOKENS = echo.estimate_tokens(PROMPT)
REPLY_TOKENS = echo.estimate_tokens(EXPECTED_TEXT)
CHUNKS = echo.split_text(EXPECTED_TEXT)


def test_openai_apis_answer_through_the_echo(echo_gateway: RunningGateway,
                                             mock: MockUpstream) -> None:
    with openai_client(echo_gateway) as client:
        completion = client.chat.completions.create(model="gpt-x", messages=CHAT_MESSAGES)
        chunks = list(client.chat.completions.create(
            model="gpt-x", messages=CHAT_MESSAGES, stream=True,
            stream_options={"include_usage": True}))
        response = client.responses.create(model="gpt-x", input=PROMPT)
        events = list(client.responses.create(model="gpt-x", input=PROMPT, stream=True))
        models = client.models.list()
    assert completion.choices[0].message.content == EXPECTED_TEXT
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        PROMPT_TOKENS, REPLY_TOKENS)
    assert [c.choices[0].delta.content for c in chunks if c.choices] == ["", *CHUNKS, None]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == (
        PROMPT_TOKENS + REPLY_TOKENS)
    assert response.output_text == EXPECTED_TEXT
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == CHUNKS
    assert events[-1].type == "response.completed"
    assert [m.id for m in models.data] == list(echo.ECHO_MODELS)
    assert mock.requests == []  # nothing left the process


def test_anthropic_api_answers_through_the_echo(echo_gateway: RunningGateway,
                                                mock: MockUpstream) -> None:
    with anthropic_client(echo_gateway) as claude:
        message = claude.messages.create(model="claude-x", max_tokens=64,
                                         messages=CHAT_MESSAGES)
        with claude.messages.stream(model="claude-x", max_tokens=64,
                                    messages=CHAT_MESSAGES) as stream:
            pieces = list(stream.text_stream)
            final = stream.get_final_message()
        counted = claude.messages.count_tokens(model="claude-x", messages=CHAT_MESSAGES)
    for answer in (message, final):
        assert [(b.type, getattr(b, "text", None)) for b in answer.content] == [
            ("text", EXPECTED_TEXT)]
        assert (answer.usage.input_tokens, answer.usage.output_tokens) == (PROMPT_TOKENS,
                                                                           REPLY_TOKENS)
    assert pieces == CHUNKS
    assert counted.input_tokens == PROMPT_TOKENS
    assert mock.requests == []


async def test_async_sdks_answer_through_the_echo(echo_gateway: RunningGateway) -> None:
    async with async_openai_client(echo_gateway) as client:
        completion = await client.chat.completions.create(model="gpt-x", messages=CHAT_MESSAGES)
        stream = await client.chat.completions.create(model="gpt-x", messages=CHAT_MESSAGES,
                                                      stream=True)
        deltas = [c.choices[0].delta.content async for c in stream if c.choices]
        async with client.responses.stream(model="gpt-x", input=PROMPT) as events:
            final_response = await events.get_final_response()
    async with async_anthropic_client(echo_gateway) as claude:
        async with claude.messages.stream(model="claude-x", max_tokens=64,
                                          messages=CHAT_MESSAGES) as message_stream:
            final_message = await message_stream.get_final_message()
    assert completion.choices[0].message.content == EXPECTED_TEXT
    assert deltas == ["", *CHUNKS, None]
    assert final_response.output_text == EXPECTED_TEXT
    assert final_message.content[0].type == "text"
    assert final_message.content[0].text == EXPECTED_TEXT
