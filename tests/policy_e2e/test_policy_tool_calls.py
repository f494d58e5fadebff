"""Model-written tool calls are policy output, end to end (the real gateway under hypercorn, the
mock provider streaming each API's own tool-call shape, the official SDKs).

`proj_output` is governed by `output_guard.pol` (refuse on "project nightjar" in the output),
enforced. A tool call whose arguments hold the term is refused, streamed or whole, and no byte of
its arguments reaches the client; an allowed call reaches it whole, as the SDKs accumulate it.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from e2e.support import SDK_TIMEOUT
from test_policy_streams import (
    TERM,
    anthropic_sdk,
    check_refusal_policy,
    events_of,
    headers,
    new_user,
    openai_sdk,
    policy_of,
)

#: Every fragment of these arguments is recognisable (`Qzxv`) in whatever the client got.
ARGUMENTS = '{"query": "Qzxv status of ' + TERM + ' Qzxv"}'
PIECES = [ARGUMENTS[i:i + 4] for i in range(0, len(ARGUMENTS), 4)]
SAFE = '{"query": "weather in Oslo", "units": "metric"}'
TOOL = {"type": "function", "function": {"name": "lookup", "description": "Looks things up.",
                                         "parameters": {"type": "object"}}}
ANTHROPIC_TOOL = {"name": "lookup", "description": "Looks things up.",
                  "input_schema": {"type": "object"}}
PROMPT = "Look it up please."


def scenario(user: str, arguments: list[str]) -> dict[str, str]:
    return headers(user, chunks=["On it."], tool_calls=[{"name": "lookup",
                                                          "arguments": arguments}])


def stream_chat(governed: Any, user: str, arguments: list[str]
                ) -> tuple[list[Any], str, Any]:
    chunks: list[Any] = []
    error = None
    with openai_sdk(governed, "proj_output") as client:
        try:
            for chunk in client.chat.completions.create(
                    model="gpt-x", messages=[{"role": "user", "content": PROMPT}],
                    tools=[TOOL], stream=True, extra_headers=scenario(user, arguments)):
                chunks.append(chunk)
        except openai.APIError as exc:  # a refusal ends the stream with the API's error frame
            error = exc
    got = "".join(call.function.arguments or "" for c in chunks if c.choices
                  for call in c.choices[0].delta.tool_calls or [] if call.function)
    return chunks, got, error


def stream_messages(governed: Any, user: str, arguments: list[str]
                    ) -> tuple[list[Any], str, Any]:
    events: list[Any] = []
    error = None
    with anthropic_sdk(governed, "proj_output") as client:
        try:
            for event in client.messages.create(
                    model="claude-x", max_tokens=64, stream=True, tools=[ANTHROPIC_TOOL],
                    messages=[{"role": "user", "content": PROMPT}],
                    extra_headers=scenario(user, arguments)):
                events.append(event)
        except anthropic.APIStatusError as exc:
            error = exc
    got = "".join(e.delta.partial_json for e in events if e.type == "content_block_delta"
                  and e.delta.type == "input_json_delta")
    return events, got, error


def stream_responses(governed: Any, user: str, arguments: list[str]
                     ) -> tuple[list[Any], str, Any]:
    events: list[Any] = []
    error = None
    with openai_sdk(governed, "proj_output") as client:
        try:
            for event in client.responses.create(
                    model="gpt-x", input=PROMPT, stream=True,
                    tools=[{"type": "function", "name": "lookup",
                            "parameters": {"type": "object"}}],
                    extra_headers=scenario(user, arguments)):
                events.append(event)
        except openai.APIError as exc:  # a refusal ends the stream with the API's error event
            error = exc
    got = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    return events, got, error


def test_chat_streamed_tool_call_with_a_denylisted_term_is_refused(governed: Any,
                                                                    mock: Any) -> None:
    user = new_user()
    chunks, got, error = stream_chat(governed, user, PIECES)
    assert got == ""
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert isinstance(error, openai.APIError) and error.code == "policy_refused"
    check_refusal_policy(policy_of(chunks[-1]), "chat.completions")
    assert "Qzxv" not in repr([c.model_dump(exclude={"policy"}) for c in chunks])
    [event] = events_of(governed, user)
    assert (event["outcome"], event["decision"]) == ("refused", "refuse")


def test_messages_streamed_tool_call_with_a_denylisted_term_is_refused(governed: Any,
                                                                        mock: Any) -> None:
    user = new_user()
    events, got, error = stream_messages(governed, user, PIECES)
    assert got == ""
    assert error is not None and error.error_code == "policy_refused"
    check_refusal_policy(error.body["policy"], "messages")
    assert "Qzxv" not in repr([e.model_dump() for e in events])


def test_responses_streamed_tool_call_with_a_denylisted_term_is_refused(governed: Any,
                                                                         mock: Any) -> None:
    user = new_user()
    events, got, error = stream_responses(governed, user, PIECES)
    assert got == ""
    assert isinstance(error, openai.APIError) and error.code == "policy_refused"
    assert not {"response.completed", "response.failed"} & {e.type for e in events}
    check_refusal_policy(error.body["policy"], "responses")
    types = [e.type for e in events]
    assert "response.function_call_arguments.done" not in types
    assert "Qzxv" not in repr([e.model_dump(exclude={"policy"}) for e in events])


@pytest.mark.parametrize("path", ["/policy/v1/chat/completions", "/policy/v1/messages",
                                  "/policy/v1/responses"])
def test_no_byte_of_a_refused_tool_call_reaches_the_client(governed: Any, mock: Any,
                                                           path: str) -> None:
    """The raw bytes, as a non-SDK client reads them."""
    user = new_user()
    body: dict[str, Any] = {"model": "m", "stream": True, "max_tokens": 64}
    body.update({"input": PROMPT} if path.endswith("responses") else
                {"messages": [{"role": "user", "content": PROMPT}]})
    with httpx2.stream("POST", governed.url + path, json=body, timeout=SDK_TIMEOUT,
                      headers={"authorization": f"Bearer {governed.keys['proj_output']}",
                               **scenario(user, PIECES)}) as response:
        raw = b"".join(response.iter_bytes())
    assert response.status_code == 200
    assert b"Qzxv" not in raw and b"query" not in raw
    # The text before the call went out ("it." waits for the text's end: it could still begin
    # an e-mail address, so it comes in a delta of its own).
    assert b"On " in raw and b"it." in raw


def test_allowed_streamed_tool_calls_reach_the_sdks_whole(governed: Any, mock: Any) -> None:
    pieces = [SAFE[i:i + 6] for i in range(0, len(SAFE), 6)]
    chunks, got, error = stream_chat(governed, new_user(), pieces)
    assert error is None and got == SAFE and chunks[-1].choices[0].finish_reason == "tool_calls"
    events, got, error = stream_messages(governed, new_user(), pieces)
    assert error is None and got == SAFE
    assert events[-1].type == "message_stop"
    events, got, error = stream_responses(governed, new_user(), pieces)
    assert error is None and got == SAFE and events[-1].type == "response.completed"
    numbers = [e.sequence_number for e in events]
    assert numbers == list(range(len(numbers)))
    [call] = [o for o in events[-1].response.output if o.type == "function_call"]
    assert call.arguments == SAFE


def test_the_anthropic_stream_helper_accumulates_an_allowed_tool_call(governed: Any,
                                                                       mock: Any) -> None:
    with anthropic_sdk(governed, "proj_output") as client, client.messages.stream(
            model="claude-x", max_tokens=64, tools=[ANTHROPIC_TOOL],  # type: ignore[list-item]
            messages=[{"role": "user", "content": PROMPT}],
            extra_headers=scenario(new_user(), [SAFE[:9], SAFE[9:]])) as stream:
        message = stream.get_final_message()
    [tool_use] = [b for b in message.content if b.type == "tool_use"]
    assert tool_use.input == json.loads(SAFE)


# --- whole answers --------------------------------------------------------------------------------

def test_whole_answers_with_a_denylisted_term_in_tool_call_arguments_are_refused(
        governed: Any, mock: Any) -> None:
    user = new_user()
    with openai_sdk(governed, "proj_output") as client:
        with pytest.raises(openai.PermissionDeniedError) as chat:
            client.chat.completions.create(
                model="gpt-x", messages=[{"role": "user", "content": PROMPT}], tools=[TOOL],
                extra_headers=scenario(user, PIECES))
        with pytest.raises(openai.PermissionDeniedError) as responses:
            client.responses.create(model="gpt-x", input=PROMPT,
                                    extra_headers=scenario(user, PIECES))
    with anthropic_sdk(governed, "proj_output") as client, pytest.raises(
            anthropic.PermissionDeniedError) as messages:
        client.messages.create(model="claude-x", max_tokens=64,
                               messages=[{"role": "user", "content": PROMPT}],
                               extra_headers=scenario(user, PIECES))
    for error, surface in ((chat, "chat.completions"), (responses, "responses"),
                           (messages, "messages")):
        body = error.value.response.json()
        assert "Qzxv" not in json.dumps(body)
        check_refusal_policy(body["policy"], surface)


def test_whole_answers_with_allowed_tool_calls_pass(governed: Any, mock: Any) -> None:
    with openai_sdk(governed, "proj_output") as client:
        completion = client.chat.completions.create(
            model="gpt-x", messages=[{"role": "user", "content": PROMPT}], tools=[TOOL],
            extra_headers=scenario(new_user(), [SAFE]))
    calls = completion.choices[0].message.tool_calls or []
    assert [c.function.arguments for c in calls if c.type == "function"] == [SAFE]
