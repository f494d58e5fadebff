"""The per-API hooks of the governed surface: exact outputs for each API, inputs never mutated,
and everything the gateway makes up (holding replies, refusal frames) accepted by the official
SDKs."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from anthropic.types import Message
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseErrorEvent

from gateway.adapters import CHAT, MESSAGES, RESPONSES
from gateway.adapters.base import Adapter, InputView, Usage
from gateway.errors import PolicyRefused

JSON = dict[str, Any]
POLICY = {"policy": {"decision": "refuse", "stage": "output"}}

# --- request bodies, one rich body per API ---------------------------------------------------

CHAT_BODY: JSON = {
    "model": "gpt-x",
    "max_completion_tokens": 50,
    "max_tokens": 10,
    "tools": [{"type": "function", "function": {"name": "weather", "parameters": {}}}],
    "messages": [
        {"role": "system", "content": "Be terse."},
        {"role": "developer", "content": [{"type": "text", "text": "No slang."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "Look:"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "text", "text": "what is it?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "user", "content": "thanks"},
    ],
}

MESSAGES_BODY: JSON = {
    "model": "claude-x",
    "max_tokens": 256,
    "system": [{"type": "text", "text": "Be kind."}],
    "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "text", "text": "Rain"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "AAAA"}}]},
            {"type": "text", "text": "Umbrella?"}]},
    ],
}

RESPONSES_BODY: JSON = {
    "model": "gpt-x",
    "instructions": "Answer briefly.",
    "max_output_tokens": 64,
    "tools": [],
    "input": [
        {"role": "developer", "content": "Use metric units."},
        {"role": "user", "content": [
            {"type": "input_text", "text": "How far?"},
            {"type": "input_image", "image_url": "https://example.com/map.png"}]},
        {"role": "assistant", "content": "Let me check."},
        {"type": "function_call", "call_id": "c1", "name": "distance",
         "arguments": "{\"to\": \"Lyon\"}"},
        {"type": "function_call_output", "call_id": "c1", "output": "465 km"},
        {"role": "user", "content": "In miles?"},
    ],
}


def frozen(body: JSON) -> tuple[JSON, Callable[[], None]]:
    """`body` and a check that it was not mutated since."""
    before = copy.deepcopy(body)

    def unchanged() -> None:
        assert body == before

    return body, unchanged


# --- input_view -----------------------------------------------------------------------------

def test_chat_input_view() -> None:
    body, unchanged = frozen(CHAT_BODY)
    assert CHAT.input_view(body) == InputView(
        # Messages first (tool calls and their arguments included), then the rest of the body
        # (the tool's name).
        input_text=("Be terse.\nNo slang.\nLook:\nwhat is it?\nweather\n{\"city\": \"Oslo\"}"
                    "\nsunny\nthanks\nweather"),
        last_user_text="thanks",
        system_text="Be terse.\nNo slang.",
        message_count=6,
        has_tools=True,
        max_output_tokens=50,
        # ceil(len/4) per text: 9→3, 9→3, 5→2, 11→3, 7→2, 16→4, 5→2, 6→2, 7→2.
        estimated_input_tokens=23,
        # The assistant's tool call, as the client sent its arguments.
        tool_arguments_text='{"city": "Oslo"}',
    )
    unchanged()


def test_chat_input_view_edge_cases() -> None:
    body = {"model": "m", "max_tokens": 7, "functions": [{"name": "f"}], "messages": [
        {"role": "user", "content": [{"type": "text", "text": "first"},
                                     {"type": "text", "text": "second"}]},
        {"role": "assistant", "content": "answer"}, "not a message", {"role": "user"}]}
    view = CHAT.input_view(body)
    # A later user message without content still is the last user message; a malformed
    # message that is a bare string is read too (the model would get it if anything did).
    assert (view.input_text, view.last_user_text, view.message_count) == (
        "first\nsecond\nanswer\nnot a message\nf", "", 4)
    assert view.max_output_tokens == 7 and view.has_tools is True
    assert CHAT.input_view({"messages": [], "max_tokens": True, "tools": []}) == InputView(
        "", "", "", 0, False, None, 0)


def test_messages_input_view() -> None:
    body, unchanged = frozen(MESSAGES_BODY)
    assert MESSAGES.input_view(body) == InputView(
        # The tool use's name and input are read; the image's base64 bytes are not.
        input_text="Be kind.\nWeather?\nChecking.\nweather\nParis\nRain\nUmbrella?",
        last_user_text="Rain\nUmbrella?",
        system_text="Be kind.",
        message_count=3,
        has_tools=False,
        max_output_tokens=256,
        estimated_input_tokens=2 + 2 + 3 + 2 + 2 + 1 + 3,
        # The tool use's input, as JSON.
        tool_arguments_text='{"city":"Paris"}',
    )
    unchanged()


def test_messages_input_view_string_system_and_other_carriers_of_text() -> None:
    body = {"model": "m", "max_tokens": 1, "system": "Sys.", "tools": [{"name": "t"}],
            "messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "a", "content": "plain result"},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                "data": "doc body"}},
                {"type": "document", "source": {"type": "content", "content": [
                    {"type": "text", "text": "doc part"}]}},
                {"type": "document", "source": {"type": "base64", "data": "JVBERi0="}},
                {"type": "search_result", "source": "s", "title": "t", "content": [
                    {"type": "text", "text": "found"}]}]}]}
    view = MESSAGES.input_view(body)
    # The search result's source and title are read, the PDF's base64 bytes are not, and the
    # tool's name comes last (it is outside the messages).
    assert view.input_text == "Sys.\nplain result\ndoc body\ndoc part\ns\nt\nfound\nt"
    assert (view.system_text, view.has_tools) == ("Sys.", True)


def test_responses_input_view() -> None:
    body, unchanged = frozen(RESPONSES_BODY)
    assert RESPONSES.input_view(body) == InputView(
        # The function call's name and arguments are read; the image address is not.
        input_text=("Answer briefly.\nUse metric units.\nHow far?\nLet me check.\ndistance\n"
                    "{\"to\": \"Lyon\"}\n465 km\nIn miles?"),
        last_user_text="In miles?",
        system_text="Answer briefly.\nUse metric units.",
        message_count=6,
        has_tools=False,
        max_output_tokens=64,
        estimated_input_tokens=4 + 5 + 2 + 4 + 2 + 4 + 2 + 3,
        # The function call's arguments, as sent.
        tool_arguments_text='{"to": "Lyon"}',
    )
    unchanged()


def test_responses_input_view_of_a_string_input() -> None:
    assert RESPONSES.input_view({"model": "m", "input": "Hi there", "tools": [{"type": "x"}]}) \
        == InputView("Hi there", "Hi there", "", 1, True, None, 2)
    tool_output_parts = {"input": [{"type": "function_call_output", "call_id": "c", "output": [
        {"type": "input_text", "text": "part out"}, {"type": "input_image", "image_url": "u"}]}]}
    assert RESPONSES.input_view(tool_output_parts).input_text == "part out"


# --- map_input_texts -------------------------------------------------------------------------

def tag(text: str) -> str:
    return f"<{text}>"


def test_chat_map_input_texts() -> None:
    body, unchanged = frozen(CHAT_BODY)
    mapped = CHAT.map_input_texts(body, tag)
    expected = copy.deepcopy(CHAT_BODY)
    expected["messages"] = [
        {"role": "system", "content": "<Be terse.>"},
        {"role": "developer", "content": [{"type": "text", "text": "<No slang.>"}]},
        {"role": "user", "content": [
            {"type": "text", "text": "<Look:>"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "text", "text": "<what is it?>"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "<weather>", "arguments": "<{\"city\": \"Oslo\"}>"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "<sunny>"},
        {"role": "user", "content": "<thanks>"},
    ]
    expected["tools"] = [{"type": "function", "function": {"name": "<weather>",
                                                            "parameters": {}}}]
    assert mapped == expected
    unchanged()


def test_messages_map_input_texts() -> None:
    body, unchanged = frozen(MESSAGES_BODY)
    mapped = MESSAGES.map_input_texts(body, tag)
    image = MESSAGES_BODY["messages"][2]["content"][0]["content"][1]
    assert mapped == {
        "model": "claude-x",
        "max_tokens": 256,
        "system": [{"type": "text", "text": "<Be kind.>"}],
        "messages": [
            {"role": "user", "content": "<Weather?>"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "<Checking.>"},
                {"type": "tool_use", "id": "t1", "name": "<weather>",
                 "input": {"city": "<Paris>"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": [
                    {"type": "text", "text": "<Rain>"}, image]},
                {"type": "text", "text": "<Umbrella?>"}]},
        ],
    }
    assert MESSAGES.map_input_texts({"system": "S", "messages": []}, tag) == {
        "system": "<S>", "messages": []}
    unchanged()


def test_responses_map_input_texts() -> None:
    body, unchanged = frozen(RESPONSES_BODY)
    mapped = RESPONSES.map_input_texts(body, tag)
    assert mapped == {
        "model": "gpt-x",
        "instructions": "<Answer briefly.>",
        "max_output_tokens": 64,
        "tools": [],
        "input": [
            {"role": "developer", "content": "<Use metric units.>"},
            {"role": "user", "content": [
                {"type": "input_text", "text": "<How far?>"},
                {"type": "input_image", "image_url": "https://example.com/map.png"}]},
            {"role": "assistant", "content": "<Let me check.>"},
            {"type": "function_call", "call_id": "c1", "name": "<distance>",
             "arguments": "<{\"to\": \"Lyon\"}>"},
            {"type": "function_call_output", "call_id": "c1", "output": "<465 km>"},
            {"role": "user", "content": "<In miles?>"},
        ],
    }
    assert RESPONSES.map_input_texts({"input": "hello"}, tag) == {"input": "<hello>"}
    unchanged()


# --- map_input_texts and input_view agree ------------------------------------------------------

MARK = "\u2063mapped\u2063"


def changed_leaves(before: Any, after: Any) -> list[tuple[str, str]]:
    """(old, new) of every string that differs; fails if anything else about the structure
    differs."""
    if isinstance(before, dict):
        assert isinstance(after, dict) and list(before) == list(after)
        return [pair for key in before for pair in changed_leaves(before[key], after[key])]
    if isinstance(before, list):
        assert isinstance(after, list) and len(before) == len(after)
        return [pair for old, new in zip(before, after, strict=True)
                for pair in changed_leaves(old, new)]
    if isinstance(before, str) and before != after:
        assert isinstance(after, str)
        return [(before, after)]
    assert type(before) is type(after) and before == after
    return []


def lines(texts: list[str]) -> list[str]:
    """The lines of `texts` joined as the view joins them, sorted."""
    return sorted("\n".join(texts).split("\n"))


def assert_view_and_map_agree(adapter: Adapter, body: JSON) -> None:
    body, unchanged = frozen(body)
    visited: list[str] = []

    def mark(text: str) -> str:
        visited.append(text)
        return MARK + text

    mapped = adapter.map_input_texts(body, mark)
    unchanged()
    # Every text the view counts is mapped (the view reads the parts the selectors need first,
    # so its order may differ from the document's)...
    assert lines(visited) == sorted(adapter.input_view(body).input_text.split("\n"))
    # ...and nothing else changed: the only differing leaves are exactly the visited texts
    # (in document order, which for a body whose `system` comes last is not the view's order).
    assert sorted(changed_leaves(body, mapped)) == sorted((t, MARK + t) for t in visited)
    # The view of the mapped body is the mapped view.
    assert sorted(adapter.input_view(mapped).input_text.split("\n")) == lines(
        [MARK + t for t in visited])


@pytest.mark.parametrize(("adapter", "body"), [(CHAT, CHAT_BODY), (MESSAGES, MESSAGES_BODY),
                                              (RESPONSES, RESPONSES_BODY)],
                         ids=["chat", "messages", "responses"])
def test_map_input_texts_maps_exactly_the_texts_the_view_counts(adapter: Adapter,
                                                                 body: JSON) -> None:
    assert_view_and_map_agree(adapter, body)


# Bodies shaped like requests (the fields, keys and type names the adapters look at, nested
# arbitrarily), so that near misses are common: a `text` part whose text is not a string,
# `content` of the wrong type, a tool result inside a tool result, a message that is a number.
_WORDS = st.sampled_from(["text", "input_text", "output_text", "tool_result", "document",
                          "search_result", "function_call_output", "message", "user", "system",
                          "developer", "assistant", "content", "hi", ""])
#: Single strategies (not unions, which hypothesis flattens and draws from uniformly).
_ODD = st.sampled_from([None, True, False, 0, 2, -1, 1.5])
_TEXT = _WORDS | _ODD
_PARTS: st.SearchStrategy[Any] = st.deferred(
    lambda: st.lists(st.one_of(_PART, _PART, _ODD), max_size=4))
_CONTENT = st.one_of(_WORDS, _ODD, _PARTS, _PARTS)
_SOURCE = st.fixed_dictionaries({"type": st.sampled_from(["text", "content", "base64"])},
                                optional={"data": _TEXT, "content": _CONTENT})
#: Part types, the ones that carry text more often than the others.
_TYPES = st.sampled_from(["text", "text", "text", "input_text", "output_text", "tool_result",
                          "tool_result", "document", "search_result", "image", ""])
_PART: st.SearchStrategy[Any] = (
    st.fixed_dictionaries({"type": _TYPES, "text": _TEXT})
    | st.fixed_dictionaries({"type": _TYPES, "content": _CONTENT})
    | st.fixed_dictionaries({"type": _TYPES, "source": _SOURCE}))
_MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": _WORDS, "content": _CONTENT}, optional={"type": _WORDS}),
    st.fixed_dictionaries({"role": _WORDS, "content": _CONTENT}),
    st.fixed_dictionaries({"type": _WORDS, "output": _CONTENT}), _ODD)
_BODIES = st.fixed_dictionaries({
    "messages": st.lists(_MESSAGE, max_size=4) | _ODD, "system": _CONTENT,
    "input": _CONTENT | st.lists(_MESSAGE, max_size=4), "instructions": _TEXT,
}, optional={"tools": st.lists(_ODD, max_size=2) | _ODD, "max_tokens": _ODD})


@pytest.mark.parametrize("adapter", [CHAT, MESSAGES, RESPONSES],
                         ids=["chat", "messages", "responses"])
@settings(max_examples=300, deadline=None)
@given(body=_BODIES)
def test_view_and_map_agree_on_arbitrary_bodies(adapter: Adapter, body: JSON) -> None:
    assert_view_and_map_agree(adapter, body)


# --- with_instruction ------------------------------------------------------------------------

def test_chat_with_instruction_prepends_a_system_message() -> None:
    body, unchanged = frozen({"model": "m", "messages": [{"role": "system", "content": "Old."},
                                                        {"role": "user", "content": "Q"}]})
    assert CHAT.with_instruction(body, "Be safe.") == {"model": "m", "messages": [
        {"role": "system", "content": "Be safe."}, {"role": "system", "content": "Old."},
        {"role": "user", "content": "Q"}]}
    unchanged()


def test_messages_with_instruction_goes_into_system() -> None:
    base: JSON = {"model": "m", "max_tokens": 5, "messages": []}
    cases: list[tuple[JSON, Any]] = [
        ({}, "Be safe."),
        ({"system": "Old."}, "Be safe.\n\nOld."),
        ({"system": ""}, "Be safe."),
        ({"system": [{"type": "text", "text": "Old.", "cache_control": {"type": "ephemeral"}}]},
         [{"type": "text", "text": "Be safe."},
          {"type": "text", "text": "Old.", "cache_control": {"type": "ephemeral"}}]),
    ]
    for extra, expected in cases:
        body, unchanged = frozen({**base, **extra})
        assert MESSAGES.with_instruction(body, "Be safe.") == {**base, "system": expected}
        unchanged()


def test_responses_with_instruction_goes_into_instructions() -> None:
    body, unchanged = frozen({"model": "m", "input": "Q", "instructions": "Old."})
    assert RESPONSES.with_instruction(body, "Be safe.") == {
        "model": "m", "input": "Q", "instructions": "Be safe.\n\nOld."}
    assert RESPONSES.with_instruction({"input": "Q"}, "Be safe.") == {
        "input": "Q", "instructions": "Be safe."}
    unchanged()


# --- prepare_stream --------------------------------------------------------------------------

def test_chat_prepare_stream_asks_for_usage() -> None:
    body, unchanged = frozen({"model": "m", "stream": True})
    assert CHAT.prepare_stream(body) == (
        {"model": "m", "stream": True, "stream_options": {"include_usage": True}}, False)
    other, other_unchanged = frozen({"stream_options": {"include_usage": False,
                                                        "include_obfuscation": False}})
    assert CHAT.prepare_stream(other) == (
        {"stream_options": {"include_usage": True, "include_obfuscation": False}}, False)
    asked = {"stream_options": {"include_usage": True}}
    assert CHAT.prepare_stream(asked) == ({"stream_options": {"include_usage": True}}, True)
    unchanged()
    other_unchanged()


def test_other_apis_report_usage_in_streams_unasked() -> None:
    body = {"model": "m", "stream": True}
    assert MESSAGES.prepare_stream(body) == ({"model": "m", "stream": True}, True)
    assert RESPONSES.prepare_stream(body) == ({"model": "m", "stream": True}, True)


# --- holding replies ---------------------------------------------------------------------------

def split_generated(reply: JSON, id_key: str, prefix: str, *time_keys: str) -> JSON:
    """`reply` with its generated id and timestamps checked and taken out."""
    reply = dict(reply)
    assert re.fullmatch(re.escape(prefix) + "[0-9a-f]{24}", reply.pop(id_key))
    for key in time_keys:
        assert isinstance(reply.pop(key), int)
    return reply


def test_chat_holding_reply() -> None:
    reply = CHAT.holding_reply(CHAT_BODY, "A specialist will follow up.")
    assert split_generated(reply, "id", "chatcmpl-", "created") == {
        "object": "chat.completion",
        "model": "gpt-x",
        "choices": [{"index": 0, "message": {"role": "assistant",
                                             "content": "A specialist will follow up.",
                                             "refusal": None, "annotations": []},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
    parsed = ChatCompletion.model_validate(reply)
    assert parsed.choices[0].message.content == "A specialist will follow up."
    assert CHAT.holding_reply(CHAT_BODY, "x")["id"] != CHAT.holding_reply(CHAT_BODY, "x")["id"]


def test_messages_holding_reply() -> None:
    reply = MESSAGES.holding_reply(MESSAGES_BODY, "A specialist will follow up.")
    assert split_generated(reply, "id", "msg_") == {
        "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "A specialist will follow up."}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0},
    }
    parsed = Message.model_validate(reply)
    assert parsed.stop_reason == "end_turn" and parsed.content[0].type == "text"


def test_responses_holding_reply() -> None:
    reply = RESPONSES.holding_reply(RESPONSES_BODY, "A specialist will follow up.")
    parsed = Response.model_validate(reply)
    assert re.fullmatch("resp_[0-9a-f]{24}", parsed.id)
    assert (parsed.status, parsed.model, parsed.output_text, parsed.instructions,
            parsed.max_output_tokens, parsed.error) == (
        "completed", "gpt-x", "A specialist will follow up.", "Answer briefly.", 64, None)
    message = reply["output"][0]
    assert re.fullmatch("msg_[0-9a-f]{24}", message.pop("id"))
    assert message == {"type": "message", "status": "completed", "role": "assistant",
                       "content": [{"type": "output_text", "text": "A specialist will follow up.",
                                    "annotations": [], "logprobs": []}]}
    assert reply["usage"]["total_tokens"] == 0 and reply["completed_at"] == reply["created_at"]
    assert RESPONSES.output_text(reply) == "A specialist will follow up."


# --- output_text and response_usage ------------------------------------------------------------

def test_chat_output_text_and_usage() -> None:
    response = {"choices": [
        {"index": 0, "message": {"role": "assistant", "content": "one"}},
        {"index": 1, "message": {"role": "assistant", "content": "two"}},
        {"index": 2, "message": {"role": "assistant", "content": None, "tool_calls": []}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}
    assert CHAT.output_text(response) == "one\ntwo"
    assert CHAT.response_usage(response) == Usage(12, 3)
    assert CHAT.response_usage({"choices": []}) is None
    assert CHAT.output_text({"choices": "garbage"}) == ""


def test_messages_output_text_and_usage() -> None:
    response = {"content": [{"type": "thinking", "thinking": "hmm"},
                            {"type": "text", "text": "Hello "},
                            {"type": "tool_use", "id": "t", "name": "n", "input": {}},
                            {"type": "text", "text": "world"}],
                "usage": {"input_tokens": 20, "output_tokens": 7,
                          "cache_read_input_tokens": 100}}
    # Text blocks as one answer; thinking and tool inputs (as JSON text) are output too.
    assert MESSAGES.output_text(response) == "Hello world\nhmm\n{}"
    assert MESSAGES.response_usage(response) == Usage(20, 7)
    # Malformed counts from a broken upstream count as 0, never negative.
    assert MESSAGES.response_usage({"usage": {"input_tokens": "x", "output_tokens": -5}}) \
        == Usage(0, 0)


def test_responses_output_text_and_usage() -> None:
    response = {"output": [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "thinking"}]},
        {"type": "message", "content": [{"type": "output_text", "text": "Hello "},
                                        {"type": "refusal", "refusal": "no"}]},
        {"type": "function_call", "arguments": "{}"},
        {"type": "message", "content": [{"type": "output_text", "text": "world"}]}],
        "usage": {"input_tokens": 9, "output_tokens": 4, "total_tokens": 13}}
    # Everything the model wrote: reasoning summaries, text, refusals, call arguments.
    assert RESPONSES.output_text(response) == "thinking\nHello \nno\n{}\nworld"
    assert RESPONSES.response_usage(response) == Usage(9, 4)
    assert RESPONSES.response_usage({"usage": None}) is None


# --- streams -----------------------------------------------------------------------------------

CHAT_ROLE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "g",
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                          "finish_reason": None}]}
CHAT_TEXT = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "g",
             "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}
CHAT_STOP = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "g",
             "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
CHAT_USAGE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "g",
              "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2,
                                       "total_tokens": 13}}


def test_chat_stream_hooks() -> None:
    assert [CHAT.stream_delta(None, c) for c in (CHAT_ROLE, CHAT_TEXT, CHAT_STOP, CHAT_USAGE)] \
        == ["", "Hel", None, None]
    text, unchanged = frozen(CHAT_TEXT)
    assert CHAT.with_stream_delta(None, text, "H***") == {
        **CHAT_TEXT, "choices": [{"index": 0, "delta": {"content": "H***"},
                                  "finish_reason": None}]}
    unchanged()
    assert [CHAT.is_text_end(None, c) for c in (CHAT_ROLE, CHAT_TEXT, CHAT_STOP, CHAT_USAGE)] \
        == [False, False, True, False]
    assert [CHAT.stream_usage(None, c) for c in (CHAT_TEXT, {**CHAT_TEXT, "usage": None},
                                                 CHAT_USAGE)] == [None, None, Usage(11, 2)]
    assert [CHAT.is_usage_only_chunk(None, c) for c in (CHAT_TEXT, CHAT_STOP, CHAT_USAGE)] \
        == [False, False, True]
    assert CHAT.encode_event("ignored", {"a": 1}) == b'data: {"a":1}\n\n'


MESSAGE_START = {"type": "message_start", "message": {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "c", "content": [],
    "stop_reason": None, "stop_sequence": None,
    "usage": {"input_tokens": 25, "output_tokens": 1}}}
BLOCK_START = {"type": "content_block_start", "index": 0,
               "content_block": {"type": "text", "text": ""}}
TEXT_DELTA = {"type": "content_block_delta", "index": 0,
              "delta": {"type": "text_delta", "text": "Hel"}}
JSON_DELTA = {"type": "content_block_delta", "index": 1,
              "delta": {"type": "input_json_delta", "partial_json": "{\"a\""}}
BLOCK_STOP = {"type": "content_block_stop", "index": 0}
MESSAGE_DELTA = {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                    "stop_sequence": None},
                 "usage": {"output_tokens": 15}}
MESSAGE_STOP = {"type": "message_stop"}
PING = {"type": "ping"}
ANTHROPIC_EVENTS: list[JSON] = [MESSAGE_START, BLOCK_START, PING, TEXT_DELTA, JSON_DELTA, BLOCK_STOP,
                    MESSAGE_DELTA, MESSAGE_STOP]


def test_messages_stream_hooks() -> None:
    # A tool call's input is output too, held until its block ends.
    assert [MESSAGES.stream_delta(e["type"], e) for e in ANTHROPIC_EVENTS] == [
        None, None, None, "Hel", '{"a"', None, None, None]
    assert MESSAGES.output_delta("content_block_delta", JSON_DELTA).held  # type: ignore[union-attr]
    assert not MESSAGES.output_delta("content_block_delta", TEXT_DELTA).held  # type: ignore[union-attr]
    delta, unchanged = frozen(TEXT_DELTA)
    assert MESSAGES.with_stream_delta("content_block_delta", delta, "H*") == {
        "type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "H*"}}
    unchanged()
    assert [MESSAGES.is_text_end(e["type"], e) for e in ANTHROPIC_EVENTS] == [
        False, False, False, False, False, True, True, True]
    assert [MESSAGES.stream_usage(e["type"], e) for e in ANTHROPIC_EVENTS] == [
        Usage(25, 1), None, None, None, None, None, Usage(0, 15), None]
    assert MESSAGES.stream_usage("message_delta", {
        "type": "message_delta", "usage": {"input_tokens": 30, "output_tokens": 9}}) \
        == Usage(30, 9)
    assert not any(MESSAGES.is_usage_only_chunk(e["type"], e) for e in ANTHROPIC_EVENTS)
    assert MESSAGES.encode_event(None, PING) == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert MESSAGES.encode_event("ping", PING) == b'event: ping\ndata: {"type":"ping"}\n\n'


RESPONSE_CREATED = {"type": "response.created", "sequence_number": 0,
                    "response": {"id": "resp_abc", "status": "in_progress", "usage": None}}
OUTPUT_DELTA = {"type": "response.output_text.delta", "sequence_number": 4, "item_id": "msg_1",
                "output_index": 0, "content_index": 0, "delta": "Hel", "logprobs": []}
TEXT_DONE = {"type": "response.output_text.done", "sequence_number": 5, "item_id": "msg_1",
             "output_index": 0, "content_index": 0, "text": "Hello", "logprobs": []}
RESPONSE_COMPLETED = {"type": "response.completed", "sequence_number": 8, "response": {
    "id": "resp_abc", "status": "completed",
    "usage": {"input_tokens": 14, "output_tokens": 6, "total_tokens": 20}}}
RESPONSE_INCOMPLETE = {"type": "response.incomplete", "sequence_number": 8, "response": {
    "id": "resp_abc", "status": "incomplete", "usage": {"input_tokens": 14, "output_tokens": 64}}}
RESPONSES_EVENTS: list[JSON] = [RESPONSE_CREATED, OUTPUT_DELTA, TEXT_DONE, RESPONSE_COMPLETED,
                    RESPONSE_INCOMPLETE]


def test_responses_stream_hooks() -> None:
    assert [RESPONSES.stream_delta(e["type"], e) for e in RESPONSES_EVENTS] == [
        None, "Hel", None, None, None]
    delta, unchanged = frozen(OUTPUT_DELTA)
    assert RESPONSES.with_stream_delta(None, delta, "H*") == {**OUTPUT_DELTA, "delta": "H*"}
    unchanged()
    assert [RESPONSES.is_text_end(e["type"], e) for e in RESPONSES_EVENTS] == [
        False, False, True, True, True]
    assert [RESPONSES.stream_usage(e["type"], e) for e in RESPONSES_EVENTS] == [
        None, None, None, Usage(14, 6), Usage(14, 64)]
    assert RESPONSES.encode_event(None, {"type": "response.output_text.delta", "delta": "x"}) \
        == b'event: response.output_text.delta\n' \
           b'data: {"type":"response.output_text.delta","delta":"x"}\n\n'


# --- refusal frames ------------------------------------------------------------------------------

REFUSED = PolicyRefused("The response was stopped by policy.")


def sse_payloads(raw: bytes) -> list[tuple[str | None, str]]:
    frames = []
    for block in raw.decode().split("\n\n")[:-1]:
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        frames.append((fields.get("event"), fields["data"]))
    assert raw.endswith(b"\n\n")
    return frames


#: The refusal's error object, the same on every API (only the envelope differs).
REFUSAL_ERROR = {"type": "permission_error", "code": "policy_refused",
                 "message": "The response was stopped by policy."}


def test_chat_refusal_frames() -> None:
    template, unchanged = frozen(CHAT_TEXT)
    frames = sse_payloads(CHAT.output_refusal_frames(template, REFUSED, POLICY))
    assert [event for event, _ in frames] == [None, None, None]
    assert frames[2] == (None, "[DONE]")
    assert json.loads(frames[0][1]) == {
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "g",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}],
        "policy": {"decision": "refuse", "stage": "output"}}
    assert json.loads(frames[1][1]) == {"error": {**REFUSAL_ERROR, "param": None, **POLICY},
                                        **POLICY}
    unchanged()
    chunk = ChatCompletionChunk.model_validate(json.loads(frames[0][1]))
    assert chunk.choices[0].finish_reason == "content_filter"
    fresh = json.loads(sse_payloads(CHAT.output_refusal_frames(None, REFUSED, POLICY))[0][1])
    assert re.fullmatch("chatcmpl-[0-9a-f]{24}", fresh["id"])
    ChatCompletionChunk.model_validate(fresh)


def test_messages_refusal_frames() -> None:
    frames = sse_payloads(MESSAGES.output_refusal_frames(TEXT_DELTA, REFUSED, POLICY))
    assert [(event, json.loads(data)) for event, data in frames] == [("error", {
        "type": "error",
        "error": {**REFUSAL_ERROR, "details": {"error_code": "policy_refused"}},
        "policy": {"decision": "refuse", "stage": "output"}})]


def test_responses_refusal_frame_is_numbered_after_the_last_frame() -> None:
    template, unchanged = frozen(RESPONSE_CREATED)
    frames = sse_payloads(RESPONSES.output_refusal_frames(template, REFUSED, POLICY))
    assert [(event, json.loads(data)) for event, data in frames] == [("error", {
        "type": "error", "code": "policy_refused", "param": None, "sequence_number": 1,
        "message": "The response was stopped by policy.",
        "error": {**REFUSAL_ERROR, "param": None, **POLICY},
        "policy": {"decision": "refuse", "stage": "output"}})]
    unchanged()


def test_responses_refusal_frame_validates_as_the_sdks_error_event() -> None:
    frames = sse_payloads(RESPONSES.output_refusal_frames(OUTPUT_DELTA, REFUSED, POLICY))
    event = ResponseErrorEvent.model_validate(json.loads(frames[0][1]))
    assert (event.code, event.sequence_number) == ("policy_refused", 5)
    unnumbered = sse_payloads(RESPONSES.output_refusal_frames(None, REFUSED, POLICY))
    assert json.loads(unnumbered[0][1])["sequence_number"] == 0


# --- refusal frames through the SDKs' own stream readers ----------------------------------------

def sse(payload: JSON, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(payload).encode() + b"\n\n"


def serving(body: bytes) -> httpx2.Client:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return httpx2.Client(transport=httpx2.MockTransport(handler))


def test_openai_sdk_raises_after_the_content_filter_chunk_of_a_refused_chat_stream() -> None:
    stream = sse(CHAT_ROLE) + sse(CHAT_TEXT) + CHAT.output_refusal_frames(CHAT_TEXT, REFUSED,
                                                                          POLICY)
    client = openai.OpenAI(base_url="http://up.invalid/v1", api_key="k", max_retries=0,
                           http_client=serving(stream), _strict_response_validation=True)
    chunks = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(model="g", messages=[], stream=True):
            chunks.append(chunk)
    assert [(c.choices[0].delta.content, c.choices[0].finish_reason) for c in chunks] == [
        ("", None), ("Hel", None), (None, "content_filter")]
    assert chunks[-1].id == "chatcmpl-1"
    assert chunks[-1].to_dict()["policy"] == POLICY["policy"]
    assert (caught.value.code, caught.value.type) == ("policy_refused", "permission_error")
    assert isinstance(caught.value.body, dict) and caught.value.body["policy"] == POLICY["policy"]


def test_anthropic_sdk_raises_on_the_refusal_event() -> None:
    stream = (sse(MESSAGE_START, "message_start") + sse(BLOCK_START, "content_block_start")
              + sse(TEXT_DELTA, "content_block_delta")
              + MESSAGES.output_refusal_frames(TEXT_DELTA, REFUSED, POLICY))
    client = anthropic.Anthropic(base_url="http://up.invalid", api_key="k", max_retries=0,
                                 http_client=serving(stream), _strict_response_validation=True)
    seen = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        for event in client.messages.create(model="c", max_tokens=5, messages=[], stream=True):
            seen.append(event.type)
    assert seen == ["message_start", "content_block_start", "content_block_delta"]
    assert (caught.value.error_code, caught.value.type) == ("policy_refused", "permission_error")
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["policy"] == POLICY["policy"]


def responses_stream_until_refusal() -> bytes:
    """A real-shaped Responses stream up to the first delta, then the refusal."""
    response = RESPONSES.holding_reply({"model": "g"}, "")
    created = {"type": "response.created", "sequence_number": 0,
               "response": {**response, "status": "in_progress", "output": [], "usage": None,
                            "completed_at": None}}
    item = {"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant",
            "content": []}
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    return b"".join([
        sse(created, "response.created"),
        sse({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
             "item": item}, "response.output_item.added"),
        sse({"type": "response.content_part.added", "sequence_number": 2, **where,
             "part": part}, "response.content_part.added"),
        sse({"type": "response.output_text.delta", "sequence_number": 3, **where,
             "delta": "Hel", "logprobs": []}, "response.output_text.delta"),
        RESPONSES.output_refusal_frames(created, REFUSED, POLICY),
    ])


def test_openai_sdk_raises_on_the_refused_responses_stream() -> None:
    client = openai.OpenAI(base_url="http://up.invalid/v1", api_key="k", max_retries=0,
                           http_client=serving(responses_stream_until_refusal()),
                           _strict_response_validation=True)
    events = []
    with pytest.raises(openai.APIError) as caught:
        for event in client.responses.create(model="g", input="q", stream=True):
            events.append(event.type)
    assert events == ["response.created", "response.output_item.added",
                      "response.content_part.added", "response.output_text.delta"]
    assert (caught.value.code, caught.value.type) == ("policy_refused", "permission_error")
    # The stream helper raises the same error.
    with pytest.raises(openai.APIError) as helper_caught:
        with client.responses.stream(model="g", input="q") as helper:
            list(helper)
    assert helper_caught.value.code == "policy_refused"
