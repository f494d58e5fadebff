"""One refusal, one shape (docs/governed-surface.md, docs/reference.md): on every API, streamed and
not, refused on the input or on the output, the official SDK raises the class
docs/governed-surface.md names, with `code` `policy_refused` and type `permission_error`, and does
not retry it.

The SDKs run with their default retry policy (`max_retries` 2): a retried refusal would reach
the gateway again, so each test counts the requests the gateway received (its enforcement
events for the test's own user) and the calls it made upstream (the mock's record).

Input refusals: support_bot (`proj_support`) refuses anything off its topics. Output refusals:
output_guard (`proj_output`) refuses an answer naming "project nightjar".
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import pytest
from e2e.support import SDK_TIMEOUT

#: The OpenAI SDK leaves its own SSE async generators to the garbage collector after `[DONE]`.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Async generator .* was garbage collected:ResourceWarning")

OFF_TOPIC = "Tell me a joke about penguins."
ON_TOPIC = "Where is my order?"
LEAK = ["All fine. The code is project night", "jar, do not share."]


@dataclass(frozen=True)
class Refusal:
    stage: str
    project: str
    prompt: str
    #: What the mock answers (output refusals only).
    scenario: dict[str, Any]
    reason: str


INPUT = Refusal("input", "proj_support", OFF_TOPIC, {}, "OFF_TOPIC")
OUTPUT = Refusal("output", "proj_output", ON_TOPIC, {"chunks": LEAK, "text": "".join(LEAK)},
                 "INTERNAL_LEAK")


def new_user() -> str:
    return "shape-" + uuid.uuid4().hex[:12]


def headers(user: str, refusal: Refusal) -> dict[str, str]:
    out = {"x-policy-user": user}
    if refusal.scenario:
        out["x-mock-scenario"] = json.dumps(refusal.scenario)
    return out


# --- one call per API, as an application makes it, sync and async -------------------------------
# Each returns after consuming the whole answer: a stream is iterated to its end.

Call = Callable[[Any, Refusal, str, bool], Any]


def call_chat(governed: Any, refusal: Refusal, user: str, stream: bool) -> None:
    with openai.OpenAI(base_url=governed.url + "/policy/v1", api_key=governed.keys[
            refusal.project], timeout=SDK_TIMEOUT) as client:
        answer = client.chat.completions.create(
            model="gpt-x", messages=[{"role": "user", "content": refusal.prompt}],
            stream=stream, extra_headers=headers(user, refusal))
        if stream:
            list(answer)  # type: ignore[arg-type]


def call_responses(governed: Any, refusal: Refusal, user: str, stream: bool) -> None:
    with openai.OpenAI(base_url=governed.url + "/policy/v1", api_key=governed.keys[
            refusal.project], timeout=SDK_TIMEOUT) as client:
        answer = client.responses.create(model="gpt-x", input=refusal.prompt, stream=stream,
                                         extra_headers=headers(user, refusal))
        if stream:
            list(answer)  # type: ignore[arg-type]


def call_messages(governed: Any, refusal: Refusal, user: str, stream: bool) -> None:
    with anthropic.Anthropic(base_url=governed.url + "/policy", api_key=governed.keys[
            refusal.project], timeout=SDK_TIMEOUT) as client:
        answer = client.messages.create(
            model="claude-x", max_tokens=64, stream=stream,
            messages=[{"role": "user", "content": refusal.prompt}],
            extra_headers=headers(user, refusal))
        if stream:
            list(answer)  # type: ignore[arg-type]


async def acall_chat(governed: Any, refusal: Refusal, user: str, stream: bool) -> None:
    async with openai.AsyncOpenAI(base_url=governed.url + "/policy/v1", api_key=governed.keys[
            refusal.project], timeout=SDK_TIMEOUT) as client:
        answer = await client.chat.completions.create(
            model="gpt-x", messages=[{"role": "user", "content": refusal.prompt}],
            stream=stream, extra_headers=headers(user, refusal))
        if stream:
            async for _ in answer:  # type: ignore[union-attr]
                pass


async def acall_responses(governed: Any, refusal: Refusal, user: str, stream: bool) -> None:
    async with openai.AsyncOpenAI(base_url=governed.url + "/policy/v1", api_key=governed.keys[
            refusal.project], timeout=SDK_TIMEOUT) as client:
        answer = await client.responses.create(model="gpt-x", input=refusal.prompt,
                                               stream=stream,
                                               extra_headers=headers(user, refusal))
        if stream:
            async for _ in answer:  # type: ignore[union-attr]
                pass


async def acall_messages(governed: Any, refusal: Refusal, user: str, stream: bool) -> None:
    async with anthropic.AsyncAnthropic(base_url=governed.url + "/policy", api_key=governed.keys[
            refusal.project], timeout=SDK_TIMEOUT) as client:
        answer = await client.messages.create(
            model="claude-x", max_tokens=64, stream=stream,
            messages=[{"role": "user", "content": refusal.prompt}],
            extra_headers=headers(user, refusal))
        if stream:
            async for _ in answer:  # type: ignore[union-attr]
                pass


SYNC: dict[str, Call] = {"chat.completions": call_chat, "responses": call_responses,
                         "messages": call_messages}
ASYNC: dict[str, Callable[..., Awaitable[None]]] = {
    "chat.completions": acall_chat, "responses": acall_responses, "messages": acall_messages}


# --- what the SDK raised, and what the gateway received -------------------------------------------

def expected_class(surface: str, stream: bool, refusal: Refusal) -> type[Exception]:
    """The class docs/governed-surface.md names: a refusal the gateway answers before any SSE
    (every input refusal, every non-streamed one) is an HTTP 403; a refusal mid-stream arrives
    in a 200 stream, where the SDKs raise their base API error classes."""
    mid_stream = stream and refusal.stage == "output"
    if surface == "messages":
        return anthropic.APIStatusError if mid_stream else anthropic.PermissionDeniedError
    return openai.APIError if mid_stream else openai.PermissionDeniedError


def check_raised(error: Exception, surface: str, stream: bool, refusal: Refusal) -> None:
    cls = expected_class(surface, stream, refusal)
    assert type(error) is cls, (type(error), cls)
    if surface == "messages":
        assert isinstance(error, anthropic.APIStatusError)
        assert (error.error_code, error.type) == ("policy_refused", "permission_error")
        assert isinstance(error.body, dict)
        policy = error.body["policy"]
    else:
        assert isinstance(error, openai.APIError)
        assert (error.code, error.type) == ("policy_refused", "permission_error")
        if isinstance(error, openai.APIStatusError):
            assert error.status_code == 403
            policy = error.response.json()["policy"]
        else:
            assert isinstance(error.body, dict)
            policy = error.body["policy"]
    assert (policy["decision"], policy["effective_decision"], policy["stage"],
            policy["reason_code"]) == ("refuse", "refuse", refusal.stage, refusal.reason)


def check_not_retried(governed: Any, mock: Any, user: str, refusal: Refusal) -> None:
    """One request reached the gateway (one enforcement event: a retry would be another) and,
    for an output refusal, one reached the upstream; none for an input refusal."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and not [
            e for e in governed.events() if e.get("policy_user") == user]:
        time.sleep(0.01)
    # The SDKs retry before they raise, so any retry has reached the gateway by now; the
    # moment lets its event arrive.
    time.sleep(0.2)
    events = [e for e in governed.events()
              if e["event_type"] == "enforcement" and e["policy_user"] == user]
    assert [(e["decision"], e["outcome"]) for e in events] == [("refuse", "refused")]
    upstream = [r for r in mock.requests if r.path.startswith("/v1/")]
    assert len(upstream) == (1 if refusal.stage == "output" else 0)


by_case = pytest.mark.parametrize("surface", list(SYNC))
by_stream = pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
by_refusal = pytest.mark.parametrize("refusal", [INPUT, OUTPUT], ids=["input", "output"])


@by_case
@by_stream
@by_refusal
def test_sync_sdk_raises_the_documented_class_once(governed: Any, mock: Any, surface: str,
                                                   stream: bool, refusal: Refusal) -> None:
    user = new_user()
    with pytest.raises((openai.APIError, anthropic.APIError)) as caught:
        SYNC[surface](governed, refusal, user, stream)
    check_raised(caught.value, surface, stream, refusal)
    check_not_retried(governed, mock, user, refusal)


@by_case
@by_stream
@by_refusal
async def test_async_sdk_raises_the_same_class_once(governed: Any, mock: Any, surface: str,
                                                    stream: bool, refusal: Refusal) -> None:
    user = new_user()
    with pytest.raises((openai.APIError, anthropic.APIError)) as caught:
        await ASYNC[surface](governed, refusal, user, stream)
    check_raised(caught.value, surface, stream, refusal)
    check_not_retried(governed, mock, user, refusal)


def test_a_refusal_tells_every_client_not_to_retry(governed: Any, mock: Any) -> None:
    """`x-should-retry: false` on the 403: both SDKs obey it whatever their retry policy."""
    with openai.OpenAI(base_url=governed.url + "/policy/v1",
                       api_key=governed.keys["proj_support"], timeout=SDK_TIMEOUT) as client:
        response = client.chat.completions.with_raw_response
        with pytest.raises(openai.PermissionDeniedError) as caught:
            response.create(model="gpt-x", messages=[{"role": "user", "content": OFF_TOPIC}])
    assert caught.value.response.headers["x-should-retry"] == "false"


def helper_chat(governed: Any, refusal: Refusal, user: str) -> None:
    with openai.OpenAI(base_url=governed.url + "/policy/v1", api_key=governed.keys[
            refusal.project], timeout=SDK_TIMEOUT) as client, client.chat.completions.stream(
            model="gpt-x", messages=[{"role": "user", "content": refusal.prompt}],
            extra_headers=headers(user, refusal)) as stream:
        list(stream)


def helper_responses(governed: Any, refusal: Refusal, user: str) -> None:
    with openai.OpenAI(base_url=governed.url + "/policy/v1", api_key=governed.keys[
            refusal.project], timeout=SDK_TIMEOUT) as client, client.responses.stream(
            model="gpt-x", input=refusal.prompt, extra_headers=headers(user, refusal)) as stream:
        list(stream)


def helper_messages(governed: Any, refusal: Refusal, user: str) -> None:
    with anthropic.Anthropic(base_url=governed.url + "/policy", api_key=governed.keys[
            refusal.project], timeout=SDK_TIMEOUT) as client, client.messages.stream(
            model="claude-x", max_tokens=64, messages=[{"role": "user", "content": refusal.prompt}],
            extra_headers=headers(user, refusal)) as stream:
        list(stream)


HELPERS = {"chat.completions": helper_chat, "responses": helper_responses,
           "messages": helper_messages}


@pytest.mark.parametrize("surface", list(HELPERS))
@by_refusal
def test_the_sdks_stream_helpers_raise_the_same_class_once(governed: Any, mock: Any,
                                                           surface: str,
                                                           refusal: Refusal) -> None:
    user = new_user()
    with pytest.raises((openai.APIError, anthropic.APIError)) as caught:
        HELPERS[surface](governed, refusal, user)
    check_raised(caught.value, surface, True, refusal)
    check_not_retried(governed, mock, user, refusal)
