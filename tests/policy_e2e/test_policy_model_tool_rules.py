"""Tool rules decide the tool calls models issue, end to end: the real gateway under hypercorn,
the mock provider answering with each API's own tool calls (streamed and whole), the official
openai and anthropic SDKs, and raw bytes as a non-SDK client reads them.

`proj_model_tools` is governed by `model_tools.pol` (enforced): a call whose `tool_arguments` hold
"rm -rf" or whose tool name starts with `delete_` is refused; phone numbers in arguments are
redacted. `proj_model_tools_shadow` has the same rules in shadow. Neither policy has output rules:
what stops a call here is the tool rules alone.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from e2e.support import SDK_TIMEOUT
from test_policy_streams import anthropic_sdk, events_of, headers, new_user, openai_sdk

#: Every fragment of these is recognisable (`Zqxw`) in whatever the client got.
FORBIDDEN = '{"command": "Zqxw rm -rf /srv Zqxw", "cwd": "/home/Zqxw"}'
FORBIDDEN_PIECES = [FORBIDDEN[i:i + 5] for i in range(0, len(FORBIDDEN), 5)]
#: Spelled as a model may spell it (spaces, key order): it must reach the client as it is.
SAFE = '{"city":  "Oslo", "units": "metric"}'
SAFE_PIECES = [SAFE[:8], SAFE[8:21], SAFE[21:]]
PROMPT = "Please do it."
PATHS = {"chat.completions": "/policy/v1/chat/completions", "messages": "/policy/v1/messages",
         "responses": "/policy/v1/responses"}
by_surface = pytest.mark.parametrize("surface", list(PATHS))


def scenario(user: str, *calls: tuple[str, list[str]]) -> dict[str, str]:
    return headers(user, chunks=["On it."],
                   tool_calls=[{"name": name, "arguments": pieces} for name, pieces in calls])


def body_for(surface: str, stream: bool, tools: tuple[str, ...] = ()) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "stream": stream, "max_tokens": 64}
    if surface == "responses":
        body["input"] = PROMPT
        body["tools"] = [{"type": "function", "name": n, "parameters": {"type": "object"}}
                         for n in tools]
    else:
        body["messages"] = [{"role": "user", "content": PROMPT}]
        body["tools"] = ([{"type": "function", "function": {"name": n}} for n in tools]
                         if surface == "chat.completions" else
                         [{"name": n, "input_schema": {"type": "object"}} for n in tools])
    if not tools:
        del body["tools"]
    return body


def raw_call(governed: Any, surface: str, project: str, stream: bool,
             extra: dict[str, str], tools: tuple[str, ...] = ()) -> tuple[int, bytes]:
    with httpx2.stream("POST", governed.url + PATHS[surface], json=body_for(surface, stream, tools),
                      timeout=SDK_TIMEOUT, headers={
                          "authorization": f"Bearer {governed.keys[project]}", **extra}) as answer:
        return answer.status_code, b"".join(answer.iter_bytes())


# --- refused: no byte of the call's arguments -----------------------------------------------------

@by_surface
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_a_refused_tool_call_never_reaches_the_client(governed: Any, mock: Any, surface: str,
                                                      stream: bool) -> None:
    user = new_user()
    status, raw = raw_call(governed, surface, "proj_model_tools", stream, scenario(
        user, ("get_weather", SAFE_PIECES), ("run_shell", FORBIDDEN_PIECES)))
    assert b"Zqxw" not in raw and b"/srv" not in raw and b"command" not in raw
    assert b"policy_refused" in raw
    assert status == (200 if stream else 403)
    [event] = events_of(governed, user)
    assert (event["outcome"], event["decision"], event["reason_code"]) == (
        "refused", "refuse", "DESTRUCTIVE_TOOL_CALL")
    assert [(c["name"], c["decision"]) for c in event["tool_calls"]] == [
        ("get_weather", "allow"), ("run_shell", "refuse")]
    assert "Zqxw" not in json.dumps(event) and "Oslo" not in json.dumps(event)


def test_the_sdks_raise_the_refusal_of_a_tool_call_streamed_and_whole(governed: Any,
                                                                      mock: Any) -> None:
    calls = ("delete_repository", ['{"name": "Zqxw"}'])
    with openai_sdk(governed, "proj_model_tools") as client:
        with pytest.raises(openai.PermissionDeniedError) as chat:
            client.chat.completions.create(model="m", messages=[{"role": "user",
                                                                 "content": PROMPT}],
                                           extra_headers=scenario(new_user(), calls))
        with pytest.raises(openai.PermissionDeniedError) as responses:
            client.responses.create(model="m", input=PROMPT,
                                    extra_headers=scenario(new_user(), calls))
        chunks: list[Any] = []
        with pytest.raises(openai.APIError) as chat_stream:
            for chunk in client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": PROMPT}], stream=True,
                    extra_headers=scenario(new_user(), calls)):
                chunks.append(chunk)
        events: list[Any] = []
        with pytest.raises(openai.APIError) as responses_stream:
            for event in client.responses.create(model="m", input=PROMPT, stream=True,
                                                 extra_headers=scenario(new_user(), calls)):
                events.append(event)
    with anthropic_sdk(governed, "proj_model_tools") as anthropic_client:
        with pytest.raises(anthropic.PermissionDeniedError) as messages:
            anthropic_client.messages.create(
                model="m", max_tokens=64, messages=[{"role": "user", "content": PROMPT}],
                extra_headers=scenario(new_user(), calls))
        with pytest.raises(anthropic.APIStatusError) as messages_stream:
            for _ in anthropic_client.messages.create(
                    model="m", max_tokens=64, stream=True,
                    messages=[{"role": "user", "content": PROMPT}],
                    extra_headers=scenario(new_user(), calls)):
                pass
    for error in (chat, responses, chat_stream, responses_stream):
        assert error.value.code == "policy_refused"
    for error in (messages, messages_stream):
        assert error.value.body["policy"]["reason_code"] == "DELETION_TOOL"
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert "Zqxw" not in repr(chunks) + repr(events)


# --- allowed: the call as the model wrote it ------------------------------------------------------

def test_an_allowed_tool_call_reaches_the_sdks_as_the_model_wrote_it(governed: Any,
                                                                     mock: Any) -> None:
    calls = ("get_weather", SAFE_PIECES)
    with openai_sdk(governed, "proj_model_tools") as client:
        answer = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": PROMPT}],
            extra_headers=scenario(new_user(), calls))
        assert answer.choices[0].message.tool_calls[0].function.arguments == SAFE  # type: ignore[index,union-attr]
        streamed = "".join(
            call.function.arguments or "" for chunk in client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": PROMPT}], stream=True,
                extra_headers=scenario(new_user(), calls))
            if chunk.choices for call in chunk.choices[0].delta.tool_calls or []
            if call.function)
        assert streamed == SAFE
        response = client.responses.create(model="m", input=PROMPT,
                                           extra_headers=scenario(new_user(), calls))
        [item] = [o for o in response.output if o.type == "function_call"]
        assert item.arguments == SAFE
        done = [e for e in client.responses.create(model="m", input=PROMPT, stream=True,
                                                   extra_headers=scenario(new_user(), calls))
                if e.type == "response.completed"]
        [item] = [o for o in done[0].response.output if o.type == "function_call"]
        assert item.arguments == SAFE
    with anthropic_sdk(governed, "proj_model_tools") as anthropic_client, \
            anthropic_client.messages.stream(
                model="m", max_tokens=64, messages=[{"role": "user", "content": PROMPT}],
                extra_headers=scenario(new_user(), calls)) as stream:
        message = stream.get_final_message()
    [tool_use] = [b for b in message.content if b.type == "tool_use"]
    assert tool_use.input == json.loads(SAFE)


@by_surface
def test_allowed_streamed_arguments_are_byte_identical_in_the_raw_frames(
        governed: Any, mock: Any, surface: str) -> None:
    user = new_user()
    status, raw = raw_call(governed, surface, "proj_model_tools", True,
                           scenario(user, ("get_weather", SAFE_PIECES)))
    assert status == 200
    # The arguments go out in one delta once decided, spelled exactly as the model wrote them.
    assert json.dumps(SAFE).encode() in raw
    [event] = events_of(governed, user)
    assert event["tool_calls"] == [{"name": "get_weather", "decision": "allow",
                                    "reason_code": "ALLOW", "fired_rules": []}]


# --- redaction, shadow, tool definitions ----------------------------------------------------------

@by_surface
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_phone_numbers_in_arguments_are_redacted_keeping_json(governed: Any, mock: Any,
                                                              surface: str, stream: bool) -> None:
    arguments = '{"to": "+1 415 555 0100", "text": "hi"}'
    status, raw = raw_call(governed, surface, "proj_model_tools", stream,
                           scenario(new_user(), ("send_sms", [arguments[:9], arguments[9:]])))
    assert status == 200 and b"555 0100" not in raw and b"REDACTED" in raw


@by_surface
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_phone_numbers_in_argument_keys_are_redacted(governed: Any, mock: Any, surface: str,
                                                     stream: bool) -> None:
    arguments = '{"numbers": {"+1 415 555 0100": "office", "+1 415 555 0199": "home"}}'
    status, raw = raw_call(governed, surface, "proj_model_tools", stream,
                           scenario(new_user(), ("send_sms", [arguments[:20], arguments[20:]])))
    assert status == 200 and b"555 01" not in raw
    assert b"REDACTED:PHONE] (2)" in raw  # both entries kept


@by_surface
def test_in_shadow_a_refused_tool_call_passes_and_is_recorded(governed: Any, mock: Any,
                                                              surface: str) -> None:
    user = new_user()
    status, raw = raw_call(governed, surface, "proj_model_tools_shadow", False,
                           scenario(user, ("run_shell", [FORBIDDEN])))
    assert status == 200 and b"Zqxw" in raw
    policy = json.loads(raw)["policy"]
    assert (policy["decision"], policy["effective_decision"]) == ("refuse", "allow")
    assert policy["tool_calls"][0]["decision"] == "refuse"


@by_surface
def test_tool_definitions_the_policy_always_refuses_never_reach_the_model(
        governed: Any, mock: Any, surface: str) -> None:
    status, raw = raw_call(governed, surface, "proj_model_tools", False, scenario(new_user()),
                           tools=("delete_user", "get_weather", "run_shell"))
    assert status == 200
    assert json.loads(raw)["policy"]["tools_removed"] == ["delete_user"]
    sent = mock.requests[-1].json
    assert "delete_user" not in json.dumps(sent) and "get_weather" in json.dumps(sent)
    status, raw = raw_call(governed, surface, "proj_model_tools", False, scenario(new_user()),
                           tools=("delete_user",))
    assert status == 200 and "tools" not in mock.requests[-1].json


def test_too_many_tool_definitions_are_the_callers_error(governed: Any, mock: Any) -> None:
    tools = tuple(f"tool_{n}" for n in range(1025))
    status, raw = raw_call(governed, "chat.completions", "proj_model_tools", False,
                           scenario(new_user()), tools=tools)
    assert status == 400
    error = json.loads(raw)["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", "tools")
    assert mock.requests == []
