"""The echo upstream speaks the exact wire formats: the official SDKs, with strict response
validation, parse every answer, and what they parse is exactly what the echo generated."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam
from sdk_streams import SDK_STREAM_GENERATORS

from gateway.upstream import echo
from gateway.upstream.echo import EchoTransport, Reply

PROMPT = "What is the capital of France?"
EXPECTED_TEXT = "echo: " + PROMPT


class Httpx2Bridge(httpx2.AsyncBaseTransport):
    """Lets the SDKs (built on httpx2) talk to an `httpx2` transport, streaming frame by frame."""

    def __init__(self, inner: httpx2.AsyncBaseTransport):
        self.inner = inner
        #: Every response body as it went to the SDK (appended to while it streams).
        self.raw_bodies: list[bytearray] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        content = await request.aread()
        response = await self.inner.handle_async_request(httpx2.Request(
            request.method, str(request.url), headers=request.headers.raw, content=content))
        return httpx2.Response(response.status_code, headers=response.headers.raw,
                               stream=_Httpx2Stream(response, self.raw_bodies))


class _Httpx2Stream(httpx2.AsyncByteStream):
    def __init__(self, response: httpx2.Response, sinks: list[bytearray]):
        self.response = response
        self.sink = bytearray()
        sinks.append(self.sink)

    async def __aiter__(self) -> Any:
        stream = self.response.stream
        assert isinstance(stream, httpx2.AsyncByteStream)
        async for chunk in stream:
            self.sink += chunk
            yield chunk

    async def aclose(self) -> None:
        await self.response.aclose()


def make_openai(transport: httpx2.AsyncBaseTransport | None = None
                ) -> tuple[openai.AsyncOpenAI, Httpx2Bridge]:
    bridge = Httpx2Bridge(transport or EchoTransport())
    client = openai.AsyncOpenAI(base_url="http://echo.invalid/v1", api_key="x", max_retries=0,
                                http_client=httpx2.AsyncClient(transport=bridge),
                                _strict_response_validation=True)
    return client, bridge


def make_anthropic(transport: httpx2.AsyncBaseTransport | None = None
                   ) -> tuple[anthropic.AsyncAnthropic, Httpx2Bridge]:
    bridge = Httpx2Bridge(transport or EchoTransport())
    client = anthropic.AsyncAnthropic(base_url="http://echo.invalid", api_key="x", max_retries=0,
                                      http_client=httpx2.AsyncClient(transport=bridge),
                                      _strict_response_validation=True)
    return client, bridge


def sse_data(raw: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) of every frame in a raw event stream."""
    frames = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        frames.append((fields.get("event"), fields["data"]))
    return frames


def frame_json(frames: list[bytes]) -> list[Any]:
    return [json.loads(data) for _, data in sse_data(b"".join(frames)) if data != "[DONE]"]


USER_MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": PROMPT}]
CLAUDE_MESSAGES: list[MessageParam] = [{"role": "user", "content": PROMPT}]
#: ceil(len(PROMPT) / 4) = ceil(30 / 4): the documented estimate.
PROMPT_TOKENS = 8
#: ceil(len(EXPECTED_TEXT) / 4) = ceil(36 / 4).
REPLY_TOKENS = 9


# -- pure functions ----------------------------------------------------------------------------

def test_token_estimate_is_a_quarter_of_the_characters_rounded_up() -> None:
    assert [echo.estimate_tokens(t) for t in ("", "a", "abcd", "abcde")] == [0, 1, 1, 2]
    assert len(PROMPT) == 30 and len(EXPECTED_TEXT) == 36


def test_input_texts_cover_every_text_of_each_api() -> None:
    chat = {"messages": [{"role": "system", "content": "sys"},
                         {"role": "user", "content": [{"type": "text", "text": "a"},
                                                      {"type": "image_url", "image_url": {}}]},
                         {"role": "tool", "content": "tool out", "tool_call_id": "t"}]}
    assert echo.input_texts("chat", chat) == ["sys", "a", "tool out"]
    messages = {"system": [{"type": "text", "text": "sys"}],
                "messages": [{"role": "user", "content": [
                    {"type": "text", "text": "q"},
                    {"type": "tool_result", "tool_use_id": "x", "content": "res"}]}]}
    assert echo.input_texts("messages", messages) == ["sys", "q", "res"]
    responses = {"instructions": "be brief", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "function_call_output", "call_id": "c", "output": "42"}]}
    assert echo.input_texts("responses", responses) == ["be brief", "hi", "42"]
    assert echo.input_tokens("responses", responses) == 2 + 1 + 1


def test_last_user_text_skips_later_assistant_turns() -> None:
    body = {"messages": [{"role": "user", "content": "first"},
                         {"role": "user", "content": [{"type": "text", "text": "second"},
                                                      {"type": "text", "text": "part"}]},
                         {"role": "assistant", "content": "answer"}]}
    assert echo.last_user_text("chat", body) == "second part"
    assert echo.last_user_text("responses", {"input": "plain"}) == "plain"
    assert echo.last_user_text("messages", {"messages": []}) == ""


def test_split_text_keeps_every_character_in_at_most_four_chunks() -> None:
    assert echo.split_text("abcdefghij") == ["abc", "def", "ghi", "j"]
    assert echo.split_text("ab") == ["a", "b"]
    assert echo.split_text("") == []


def test_echo_reply_is_cut_to_a_sane_length() -> None:
    reply = Reply.for_request("chat", {"messages": [{"role": "user", "content": "x" * 5000}]})
    assert reply.text == ("echo: " + "x" * 5000)[: echo.MAX_ECHO_CHARS]


def test_usage_override_accepts_both_naming_styles() -> None:
    body = {"messages": USER_MESSAGES}
    assert Reply.for_request("chat", body, usage={"prompt_tokens": 3}).input_tokens == 3
    reply = Reply.for_request("chat", body, usage={"output_tokens": 11})
    assert (reply.input_tokens, reply.output_tokens) == (PROMPT_TOKENS, 11)


REPLY = Reply(chunks=("Hel", "lo"), input_tokens=4, output_tokens=2, key="k", created=1)


def test_chat_stream_sequence_without_usage() -> None:
    events = frame_json(list(echo.chat_completion_frames({"model": "m"}, REPLY)))
    assert [(e["choices"][0]["delta"], e["choices"][0]["finish_reason"]) for e in events] == [
        ({"role": "assistant", "content": "", "refusal": None}, None),
        ({"content": "Hel"}, None), ({"content": "lo"}, None), ({}, "stop")]
    assert all("usage" not in e for e in events)
    assert list(echo.chat_completion_frames({}, REPLY))[-1] == b"data: [DONE]\n\n"


def test_chat_stream_sequence_with_usage() -> None:
    body = {"model": "m", "stream_options": {"include_usage": True}}
    events = frame_json(list(echo.chat_completion_frames(body, REPLY)))
    assert [e["usage"] for e in events[:-1]] == [None] * 4
    assert events[-1]["choices"] == []
    assert {k: events[-1]["usage"][k] for k in ("prompt_tokens", "completion_tokens",
                                                "total_tokens")} == {
        "prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


def test_messages_stream_event_order() -> None:
    frames = sse_data(b"".join(echo.message_frames({"model": "m"}, REPLY)))
    assert [event for event, _ in frames] == [
        "message_start", "content_block_start", "ping", "content_block_delta",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert all(json.loads(data)["type"] == event for event, data in frames)


def test_responses_stream_event_order_and_sequence_numbers() -> None:
    frames = sse_data(b"".join(echo.response_frames({"model": "m"}, REPLY)))
    assert [event for event, _ in frames] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    assert [json.loads(data)["sequence_number"] for _, data in frames] == list(range(10))


# -- through the official SDKs -----------------------------------------------------------------

async def test_chat_completion_parsed_by_sdk() -> None:
    client, bridge = make_openai()
    raw = await client.chat.completions.with_raw_response.create(model="gpt-x",
                                                                 messages=USER_MESSAGES)
    parsed = raw.parse()
    assert parsed.to_dict(mode="json") == json.loads(bridge.raw_bodies[-1])
    assert parsed.choices[0].message.content == EXPECTED_TEXT
    assert parsed.model == "gpt-x"
    assert parsed.usage is not None
    assert (parsed.usage.prompt_tokens, parsed.usage.completion_tokens,
            parsed.usage.total_tokens) == (PROMPT_TOKENS, REPLY_TOKENS, PROMPT_TOKENS + REPLY_TOKENS)


#: The OpenAI SDK stops reading at `[DONE]` and leaves its own async generators to the garbage
#: collector (tests/sdk_streams.py names them).
sdk_leaves_generators_open = SDK_STREAM_GENERATORS


@sdk_leaves_generators_open
@pytest.mark.parametrize("include_usage", [False, True])
async def test_chat_stream_parsed_by_sdk(include_usage: bool) -> None:
    client, bridge = make_openai()
    stream = await client.chat.completions.create(
        model="gpt-x", messages=USER_MESSAGES, stream=True,
        stream_options={"include_usage": True} if include_usage else openai.omit)
    chunks = [chunk async for chunk in stream]
    generated = frame_json([bytes(bridge.raw_bodies[-1])])
    assert [c.to_dict(mode="json") for c in chunks] == generated
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == EXPECTED_TEXT
    assert len(chunks) == 1 + len(echo.split_text(EXPECTED_TEXT)) + 1 + include_usage
    usage = chunks[-1].usage
    if include_usage:
        assert usage is not None and usage.total_tokens == PROMPT_TOKENS + REPLY_TOKENS
    else:
        assert usage is None and chunks[-1].choices[0].finish_reason == "stop"


@sdk_leaves_generators_open
async def test_chat_stream_with_explicit_chunks() -> None:
    chosen = ["forbidden wo", "rd here", "."]
    client, _ = make_openai(EchoTransport(lambda api, body: Reply.for_request(
        api, body, chunks=chosen)))
    stream = await client.chat.completions.create(model="m", messages=USER_MESSAGES, stream=True)
    deltas = [c.choices[0].delta.content async for c in stream if c.choices]
    assert deltas == ["", *chosen, None]


async def test_responses_parsed_by_sdk() -> None:
    client, bridge = make_openai()
    raw = await client.responses.with_raw_response.create(model="gpt-x", input=PROMPT,
                                                          instructions="Be brief.")
    parsed = raw.parse()
    assert parsed.to_dict(mode="json") == json.loads(bridge.raw_bodies[-1])
    assert parsed.output_text == EXPECTED_TEXT
    assert parsed.status == "completed" and parsed.instructions == "Be brief."
    assert parsed.usage is not None
    # "Be brief." is 9 characters: 3 tokens.
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens,
            parsed.usage.total_tokens) == (PROMPT_TOKENS + 3, REPLY_TOKENS,
                                           PROMPT_TOKENS + 3 + REPLY_TOKENS)


async def test_responses_stream_parsed_by_sdk() -> None:
    client, bridge = make_openai()
    stream = await client.responses.create(model="gpt-x", input=PROMPT, stream=True)
    events = [event async for event in stream]
    assert [e.to_dict(mode="json") for e in events] == frame_json([bytes(bridge.raw_bodies[-1])])
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == EXPECTED_TEXT
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == EXPECTED_TEXT


async def test_responses_stream_helper_accumulates_final_response() -> None:
    client, _ = make_openai()
    async with client.responses.stream(model="gpt-x", input=PROMPT) as stream:
        final = await stream.get_final_response()
    assert final.output_text == EXPECTED_TEXT
    assert final.usage is not None and final.usage.output_tokens == REPLY_TOKENS


async def test_openai_models_list_parsed_by_sdk() -> None:
    client, _ = make_openai()
    page = await client.models.list()
    assert [m.id for m in page.data] == list(echo.ECHO_MODELS)
    assert page.data[0].object == "model"


async def test_openai_bad_request_error_shape() -> None:
    client, _ = make_openai()
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="m", messages="not a list")  # type: ignore[arg-type]
    assert caught.value.status_code == 400
    assert caught.value.param == "messages"
    assert caught.value.type == "invalid_request_error"


async def test_anthropic_message_parsed_by_sdk() -> None:
    client, bridge = make_anthropic()
    raw = await client.messages.with_raw_response.create(
        model="claude-x", max_tokens=100, system="Be brief.", messages=CLAUDE_MESSAGES)
    parsed = await raw.parse()
    assert parsed.to_dict(mode="json") == json.loads(bridge.raw_bodies[-1])
    assert parsed.content[0].type == "text" and parsed.content[0].text == EXPECTED_TEXT
    assert parsed.stop_reason == "end_turn" and parsed.model == "claude-x"
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens) == (PROMPT_TOKENS + 3,
                                                                       REPLY_TOKENS)


async def test_anthropic_raw_stream_parsed_by_sdk() -> None:
    client, bridge = make_anthropic()
    stream = await client.messages.create(model="claude-x", max_tokens=100,
                                          messages=CLAUDE_MESSAGES, stream=True)
    events = [event async for event in stream]
    # The SDK drops `ping`; every other event round-trips unchanged.
    generated = [e for e in frame_json([bytes(bridge.raw_bodies[-1])]) if e["type"] != "ping"]
    assert [e.to_dict(mode="json") for e in events] == generated
    assert len(generated) == 5 + len(echo.split_text(EXPECTED_TEXT))


async def test_anthropic_stream_helper_final_message() -> None:
    client, _ = make_anthropic()
    async with client.messages.stream(model="claude-x", max_tokens=100,
                                      messages=CLAUDE_MESSAGES) as stream:
        texts = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert texts == echo.split_text(EXPECTED_TEXT)
    assert final.content[0].type == "text" and final.content[0].text == EXPECTED_TEXT
    assert (final.usage.input_tokens, final.usage.output_tokens) == (PROMPT_TOKENS, REPLY_TOKENS)
    assert final.stop_reason == "end_turn"


async def test_anthropic_count_tokens_and_models() -> None:
    client, _ = make_anthropic()
    counted = await client.messages.count_tokens(model="claude-x", messages=CLAUDE_MESSAGES,
                                                 system="Be brief.")
    assert counted.input_tokens == PROMPT_TOKENS + 3
    page = await client.models.list()
    assert [m.id for m in page.data] == list(echo.ECHO_MODELS)
    assert page.data[0].type == "model"


async def test_anthropic_missing_max_tokens_is_the_apis_own_400() -> None:
    transport = EchoTransport()
    async with httpx2.AsyncClient(transport=transport, base_url="http://echo.invalid") as http:
        response = await http.post("/v1/messages", json={"model": "m", "messages": []})
    assert response.status_code == 400
    assert response.json() == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "Missing required parameter: 'max_tokens'."}}


@pytest.mark.parametrize(("path", "expected"), [
    ("/v1/chat/completions", {"error": {
        "message": "We could not parse the JSON body of your request.",
        "type": "invalid_request_error", "param": None, "code": None}}),
    ("/v1/messages", {"type": "error", "error": {
        "type": "invalid_request_error",
        "message": "We could not parse the JSON body of your request."}}),
])
async def test_bad_json_gets_the_apis_own_400(path: str, expected: dict[str, Any]) -> None:
    async with httpx2.AsyncClient(transport=EchoTransport(), base_url="http://echo.invalid") as http:
        response = await http.post(path, content=b"{not json")
    assert (response.status_code, response.json()) == (400, expected)


async def test_unknown_path_and_wrong_method() -> None:
    async with httpx2.AsyncClient(transport=EchoTransport(), base_url="http://echo.invalid") as http:
        missing = await http.post("/v1/embeddings", json={})
        wrong = await http.get("/v1/chat/completions")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
    assert wrong.status_code == 405


async def test_echo_stream_arrives_frame_by_frame() -> None:
    async with httpx2.AsyncClient(transport=EchoTransport(), base_url="http://echo.invalid") as http:
        body = {"model": "m", "max_tokens": 5, "messages": USER_MESSAGES, "stream": True}
        async with http.stream("POST", "/v1/messages", json=body) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            pieces = [piece async for piece in response.aiter_raw()]
    assert len(pieces) == 6 + len(echo.split_text(EXPECTED_TEXT))
    assert all(piece.endswith(b"\n\n") and piece.count(b"\n\n") == 1 for piece in pieces)
