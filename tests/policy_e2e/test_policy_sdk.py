"""The official SDKs on the governed surface (docs/governed-surface.md): the OpenAI SDK at
`/policy/v1`, the Anthropic SDK at `/policy`, sync and async. The `policy` object is read from
every non-streamed response and from every event of every stream, as an application would read
it; raw streams show that `event:` lines and `[DONE]` are left as the upstream sent them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from e2e.support import SDK_TIMEOUT, sse_events
from sdk_streams import SDK_STREAM_GENERATORS

#: The OpenAI SDK leaves its own SSE async generators to the garbage collector after `[DONE]`,
#: which trio reports as a ResourceWarning. That is the SDK's cleanup, not the gateway's.
pytestmark = SDK_STREAM_GENERATORS

PROJECT = "proj_support"
POLICY_ID = "support_bot"
#: support_bot refuses anything off its topics; "order" keeps these requests allowed.
PROMPT = "Where is my order?"
TEXT = "Your order ships tomorrow."
CHUNKS = ["Your or", "der ships ", "tomor", "row."]


def scenario(**fields: Any) -> dict[str, str]:
    return {"x-mock-scenario": json.dumps(fields)}


def new_user() -> str:
    """A policy user unique to one test, so its events and quota are its own."""
    return "sdk-" + uuid.uuid4().hex[:12]


def headers(user: str, **fields: Any) -> dict[str, str]:
    return {"x-policy-user": user, **scenario(**fields)}


def check_policy(policy: Any, surface: str, user: str) -> None:
    assert isinstance(policy, dict), policy
    assert (policy["project_id"], policy["policy_id"], policy["policy_target"],
            policy["policy_user"]) == (PROJECT, POLICY_ID, surface, user)
    assert (policy["decision"], policy["effective_decision"], policy["enforced"],
            policy["rollout_mode"], policy["stage"]) == ("allow", "allow", True, "enforced",
                                                         "input")
    assert policy["allowlist_hits"] == ["order"]


def policy_of(item: Any) -> Any:
    """The `policy` an SDK object kept as an extra field; None when it has none."""
    return (item.model_extra or {}).get("policy")


def policies_of(items: list[Any]) -> list[Any]:
    return [policy_of(item) for item in items]


def openai_sdk(governed: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=governed.url + "/policy/v1", api_key=governed.keys[PROJECT],
                         max_retries=0, timeout=SDK_TIMEOUT, _strict_response_validation=True)


def async_openai_sdk(governed: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=governed.url + "/policy/v1",
                              api_key=governed.keys[PROJECT], max_retries=0,
                              timeout=SDK_TIMEOUT, _strict_response_validation=True)


def anthropic_sdk(governed: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=governed.url + "/policy", api_key=governed.keys[PROJECT],
                               max_retries=0, timeout=SDK_TIMEOUT,
                               _strict_response_validation=True)


def async_anthropic_sdk(governed: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=governed.url + "/policy",
                                    api_key=governed.keys[PROJECT], max_retries=0,
                                    timeout=SDK_TIMEOUT, _strict_response_validation=True)


MESSAGES: list[Any] = [{"role": "user", "content": PROMPT}]

# --- non-streamed responses ----------------------------------------------------------------------


def test_chat_completion_carries_policy(governed: Any, mock: Any) -> None:
    user = new_user()
    with openai_sdk(governed) as client:
        completion = client.chat.completions.create(model="gpt-x", messages=MESSAGES,
                                                    extra_headers=headers(user, text=TEXT))
    assert completion.choices[0].message.content == TEXT
    check_policy(policy_of(completion), "chat.completions", user)
    assert mock.requests[-1].path == "/v1/chat/completions"


def test_response_carries_policy(governed: Any, mock: Any) -> None:
    user = new_user()
    with openai_sdk(governed) as client:
        response = client.responses.create(model="gpt-x", input=PROMPT,
                                           extra_headers=headers(user, text=TEXT))
    assert response.output_text == TEXT
    check_policy(policy_of(response), "responses", user)
    assert mock.requests[-1].path == "/v1/responses"


def test_message_carries_policy(governed: Any, mock: Any) -> None:
    user = new_user()
    with anthropic_sdk(governed) as client:
        message = client.messages.create(model="claude-x", max_tokens=64, messages=MESSAGES,
                                         extra_headers=headers(user, text=TEXT))
    assert message.content[0].text == TEXT  # type: ignore[union-attr]
    check_policy(policy_of(message), "messages", user)
    assert mock.requests[-1].path == "/v1/messages"


async def test_async_clients_read_policy_of_all_three_apis(governed: Any, mock: Any) -> None:
    user = new_user()
    async with async_openai_sdk(governed) as client:
        completion = await client.chat.completions.create(
            model="gpt-x", messages=MESSAGES, extra_headers=headers(user, text=TEXT))
        response = await client.responses.create(model="gpt-x", input=PROMPT,
                                                 extra_headers=headers(user, text=TEXT))
    async with async_anthropic_sdk(governed) as aclient:
        message = await aclient.messages.create(model="claude-x", max_tokens=64,
                                                messages=MESSAGES,
                                                extra_headers=headers(user, text=TEXT))
    check_policy(policy_of(completion), "chat.completions", user)
    check_policy(policy_of(response), "responses", user)
    check_policy(policy_of(message), "messages", user)
    assert (completion.choices[0].message.content, response.output_text) == (TEXT, TEXT)


# --- streams: every event carries `policy` --------------------------------------------------------
# The mock streams as the providers do: chat sends a role chunk, one chunk per text piece and a
# finish chunk (the usage chunk the gateway asked for is dropped: the client did not ask);
# messages wraps the deltas in 3 events before and 3 after, of which the SDK hides `ping`
# (the raw-stream test below sees it); responses wraps them in 4 events before and 4 after.
CHAT_EVENTS = len(CHUNKS) + 2
MESSAGES_SDK_EVENTS = len(CHUNKS) + 5
RESPONSES_EVENTS = len(CHUNKS) + 8

def check_stream_events(events: list[Any], surface: str, user: str, expected_count: int
                        ) -> None:
    policies = policies_of(events)
    assert len(events) == expected_count
    assert None not in policies, [type(e).__name__ for e, p in zip(events, policies, strict=True)
                                  if p is None]
    for policy in policies:
        check_policy(policy, surface, user)


def chat_text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_chat_stream_every_chunk_carries_policy(governed: Any, mock: Any) -> None:
    user = new_user()
    with openai_sdk(governed) as client:
        chunks = list(client.chat.completions.create(
            model="gpt-x", messages=MESSAGES, stream=True,
            extra_headers=headers(user, chunks=CHUNKS)))
    check_stream_events(chunks, "chat.completions", user, CHAT_EVENTS)
    assert chat_text(chunks) == TEXT
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_responses_stream_every_event_carries_policy(governed: Any, mock: Any) -> None:
    user = new_user()
    with openai_sdk(governed) as client:
        events = list(client.responses.create(model="gpt-x", input=PROMPT, stream=True,
                                              extra_headers=headers(user, chunks=CHUNKS)))
    check_stream_events(events, "responses", user, RESPONSES_EVENTS)
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == TEXT


def test_messages_stream_every_event_carries_policy(governed: Any, mock: Any) -> None:
    user = new_user()
    with anthropic_sdk(governed) as client:
        events: list[Any] = list(client.messages.create(model="claude-x", max_tokens=64, messages=MESSAGES,
                                             stream=True,
                                             extra_headers=headers(user, chunks=CHUNKS)))
    check_stream_events(events, "messages", user, MESSAGES_SDK_EVENTS)
    assert [e.type for e in events][:2] == ["message_start", "content_block_start"]
    assert [e.type for e in events][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == TEXT


def test_messages_stream_helper_sees_policy_on_raw_events(governed: Any, mock: Any) -> None:
    """`messages.stream()` (the SDK's accumulating helper) parses the governed stream; the
    events it passes through unchanged still carry `policy` (it rebuilds `message_stop`)."""
    user = new_user()
    with anthropic_sdk(governed) as client, client.messages.stream(
            model="claude-x", max_tokens=64, messages=MESSAGES,
            extra_headers=headers(user, chunks=CHUNKS)) as stream:
        raw = [event for event in stream if event.type in (
            "message_start", "content_block_start", "content_block_delta", "message_delta")]
        final = stream.get_final_message()
    assert final.content[0].text == TEXT  # type: ignore[union-attr]
    assert len(raw) == len(CHUNKS) + 3
    for policy in policies_of(raw):
        check_policy(policy, "messages", user)


async def test_async_streams_every_event_carries_policy(governed: Any, mock: Any) -> None:
    user = new_user()
    async with async_openai_sdk(governed) as client:
        stream: Any = await client.chat.completions.create(
            model="gpt-x", messages=MESSAGES, stream=True,
            extra_headers=headers(user, chunks=CHUNKS))
        chunks = [chunk async for chunk in stream]
        rstream: Any = await client.responses.create(model="gpt-x", input=PROMPT, stream=True,
                                                extra_headers=headers(user, chunks=CHUNKS))
        revents = [event async for event in rstream]
    async with async_anthropic_sdk(governed) as aclient:
        mstream: Any = await aclient.messages.create(model="claude-x", max_tokens=64,
                                                messages=MESSAGES, stream=True,
                                                extra_headers=headers(user, chunks=CHUNKS))
        mevents = [event async for event in mstream]
    check_stream_events(chunks, "chat.completions", user, CHAT_EVENTS)
    check_stream_events(revents, "responses", user, RESPONSES_EVENTS)
    check_stream_events(mevents, "messages", user, MESSAGES_SDK_EVENTS)
    assert chat_text(chunks) == TEXT


# --- raw streams: what is left untouched ----------------------------------------------------------

RAW_BODIES = {
    "/policy/v1/chat/completions": {"model": "gpt-x", "messages": MESSAGES, "stream": True},
    "/policy/v1/messages": {"model": "claude-x", "max_tokens": 64, "messages": MESSAGES,
                            "stream": True},
    "/policy/v1/responses": {"model": "gpt-x", "input": PROMPT, "stream": True},
}


@pytest.mark.parametrize("path", list(RAW_BODIES))
def test_raw_stream_keeps_event_lines_and_done(governed: Any, mock: Any, path: str) -> None:
    user = new_user()
    response = httpx2.post(governed.url + path, json=RAW_BODIES[path], timeout=SDK_TIMEOUT,
                          headers={"authorization": "Bearer " + governed.keys[PROJECT],
                                   **headers(user, chunks=CHUNKS)})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = response.content
    frames = sse_events(raw)
    if path.endswith("chat/completions"):
        # `[DONE]` is the last frame, byte for byte, and the only frame without JSON.
        assert raw.endswith(b"\n\ndata: [DONE]\n\n")
        assert raw.count(b"[DONE]") == 1
        assert frames[-1] == (None, "[DONE]")
        frames = frames[:-1]
        assert all(name is None for name, _ in frames)
    else:
        assert b"[DONE]" not in raw
        # Each `event:` line still names the event its data holds.
        assert all(name == json.loads(data)["type"] for name, data in frames)
        if path.endswith("messages"):  # the SDK hides `ping`; it carries `policy` too
            assert [name for name, _ in frames].count("ping") == 1
    for _, data in frames:
        check_policy(json.loads(data)["policy"], RAW_SURFACES[path], user)


RAW_SURFACES = {"/policy/v1/chat/completions": "chat.completions",
                "/policy/v1/messages": "messages", "/policy/v1/responses": "responses"}
