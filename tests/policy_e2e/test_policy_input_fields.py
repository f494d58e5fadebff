"""Every string the model reads is policy input, end to end: a denylisted term placed in each
newly covered field of a request is refused on `/policy` before the upstream is called, through
the official SDKs. `proj_hard` is governed by `hard_refuse.pol` (refuse "nerve agent").

A representative sample: the full list of fields is checked without a server, from the SDKs'
own request types, by `tests/enforcement/test_input_inventory.py`.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest
from e2e.support import SDK_TIMEOUT

TERM = "nerve agent"
SAFE_USER = {"role": "user", "content": "What is the weather like?"}


def openai_sdk(governed: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=governed.url + "/policy/v1", api_key=governed.keys["proj_hard"],
                         max_retries=0, timeout=SDK_TIMEOUT)


def anthropic_sdk(governed: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=governed.url + "/policy",
                               api_key=governed.keys["proj_hard"], max_retries=0,
                               timeout=SDK_TIMEOUT)


def function_tool(description: str = "Looks things up.", parameters: Any = None) -> Any:
    return {"type": "function", "function": {
        "name": "lookup", "description": description,
        "parameters": parameters or {"type": "object", "properties": {}}}}


CHAT_CASES: dict[str, dict[str, Any]] = {
    "tools[].function.description": {"messages": [SAFE_USER],
                                     "tools": [function_tool(f"Explains {TERM} synthesis.")]},
    "tools[].function.parameters description": {"messages": [SAFE_USER], "tools": [function_tool(
        parameters={"type": "object", "properties": {"q": {
            "type": "string", "description": f"the {TERM} to make"}}})]},
    "messages[].name": {"messages": [{"role": "user", "name": "nerve agent".replace(" ", "_"),
                                      "content": "hi"}, {**SAFE_USER, "name": f"x {TERM}"}]},
    "tool_calls[].function.arguments": {"messages": [
        SAFE_USER,
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "lookup", "arguments": f'{{"q": "{TERM}"}}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "none found"}]},
    "assistant refusal part": {"messages": [
        SAFE_USER, {"role": "assistant", "content": [{"type": "refusal",
                                                      "refusal": f"No {TERM} talk."}]},
        SAFE_USER]},
    "response_format.json_schema.description": {"messages": [SAFE_USER], "response_format": {
        "type": "json_schema", "json_schema": {"name": "answer", "description": f"A {TERM}.",
                                               "schema": {"type": "object"}}}},
    "prediction.content": {"messages": [SAFE_USER],
                           "prediction": {"type": "content", "content": f"About {TERM}."}},
}

MESSAGES_CASES: dict[str, dict[str, Any]] = {
    "tool_use.input": {"messages": [
        {"role": "user", "content": "Look it up."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "lookup",
                                           "input": {"q": {"deep": [f"make {TERM}"]}}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": "nothing"}]}]},
    "thinking block": {"messages": [
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": f"They want {TERM}.", "signature": "sig"},
            {"type": "text", "text": "Hello."}]},
        {"role": "user", "content": "Go on."}]},
    "tools[].description": {"messages": [{"role": "user", "content": "Hi."}], "tools": [
        {"name": "lookup", "description": f"Finds {TERM} recipes.",
         "input_schema": {"type": "object"}}]},
    "document title and context": {"messages": [{"role": "user", "content": [
        {"type": "document", "title": f"All about {TERM}", "context": "a leaflet",
         "source": {"type": "text", "media_type": "text/plain", "data": "Harmless."}},
        {"type": "text", "text": "Summarise."}]}]},
}

RESPONSES_CASES: dict[str, dict[str, Any]] = {
    "reasoning summary": {"input": [
        {"role": "user", "content": "Hi."},
        {"type": "reasoning", "id": "rs_1", "summary": [
            {"type": "summary_text", "text": f"Plan: explain {TERM}."}]},
        {"role": "user", "content": "Go on."}]},
    "function_call arguments": {"input": [
        {"role": "user", "content": "Look it up."},
        {"type": "function_call", "call_id": "c1", "name": "lookup",
         "arguments": f'{{"q": "{TERM}"}}'},
        {"type": "function_call_output", "call_id": "c1", "output": "nothing"}]},
    "tools[].description": {"input": "Hi.", "tools": [
        {"type": "function", "name": "lookup", "description": f"Makes {TERM}.",
         "parameters": {"type": "object"}, "strict": False}]},
    "text.format json_schema description": {"input": "Hi.", "text": {"format": {
        "type": "json_schema", "name": "answer", "description": f"The {TERM} formula.",
        "schema": {"type": "object"}}}},
    "prompt variables": {"input": "Hi.", "prompt": {"id": "pmpt_1",
                                                    "variables": {"topic": f"{TERM}"}}},
}


def check_refused(error: Any, mock: Any) -> None:
    body = error.response.json()
    assert error.status_code == 403
    assert body["policy"]["decision"] == "refuse"
    assert body["policy"]["denylist_hits"] == [TERM]
    assert mock.requests == []  # refused before the upstream


@pytest.mark.parametrize("case", list(CHAT_CASES))
def test_chat_fields(governed: Any, mock: Any, case: str) -> None:
    with openai_sdk(governed) as client, pytest.raises(openai.PermissionDeniedError) as error:
        client.chat.completions.create(model="gpt-x", **CHAT_CASES[case])
    check_refused(error.value, mock)


@pytest.mark.parametrize("case", list(MESSAGES_CASES))
def test_messages_fields(governed: Any, mock: Any, case: str) -> None:
    with anthropic_sdk(governed) as client, pytest.raises(
            anthropic.PermissionDeniedError) as error:
        client.messages.create(model="claude-x", max_tokens=32, **MESSAGES_CASES[case])
    check_refused(error.value, mock)


@pytest.mark.parametrize("case", list(RESPONSES_CASES))
def test_responses_fields(governed: Any, mock: Any, case: str) -> None:
    with openai_sdk(governed) as client, pytest.raises(openai.PermissionDeniedError) as error:
        client.responses.create(model="gpt-x", **RESPONSES_CASES[case])
    check_refused(error.value, mock)


def test_the_same_requests_without_the_term_pass(governed: Any, mock: Any) -> None:
    """The refusals above come from the term, not from the shape of the requests."""
    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(TERM, "garden gnome")
        if isinstance(value, list):
            return [clean(v) for v in value]
        return {k: clean(v) for k, v in value.items()} if isinstance(value, dict) else value

    with openai_sdk(governed) as client:
        for case in CHAT_CASES.values():
            client.chat.completions.create(model="gpt-x", **clean(case))
        for case in RESPONSES_CASES.values():
            client.responses.create(model="gpt-x", **clean(case))
    with anthropic_sdk(governed) as claude:
        for case in MESSAGES_CASES.values():
            claude.messages.create(model="claude-x", max_tokens=32, **clean(case))
    assert len(mock.requests) == len(CHAT_CASES) + len(RESPONSES_CASES) + len(MESSAGES_CASES)
