"""Output rules on streams and responses (docs/governed-surface.md, docs/policy-language.md), usage
(docs/quotas.md) and events (docs/events.md), end to end with the official SDKs and raw HTTP.

`proj_output` is governed by `output_guard.pol` (refuse on "project nightjar" in the output,
redact e-mail addresses in it), enforced; `proj_shadow` by the same rules in shadow. The mock
streams exactly the chunks a test chooses, so a term can be cut anywhere.
"""

from __future__ import annotations

import gc
import json
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from e2e.support import SDK_TIMEOUT, sse_events

import dsl

HERE = Path(__file__).parent
OUTPUT_GUARD = dsl.compile_policy((HERE / "policies" / "output_guard.pol").read_text())
#: What the monitor may hold back: the window output_guard's rules need (docs/governed-surface.md).
WINDOW = OUTPUT_GUARD.output_window

TERM = "project nightjar"
#: Over one window of harmless text, so a correct monitor must release some of it early.
PREFIX = "All systems are fine today. " * (WINDOW // 20)
EMAIL = "jane.doe@example.com"
REDACTED = "[REDACTED:EMAIL]"
USAGE = {"input_tokens": 17, "output_tokens": 5}
#: The prompt of the streamed calls; its distinctive word must never appear in an event.
PROMPT = "Status of the Quokkaberry build?"


def new_user() -> str:
    return "str-" + uuid.uuid4().hex[:12]


def headers(user: str, **scenario: Any) -> dict[str, str]:
    return {"x-policy-user": user, "x-mock-scenario": json.dumps(scenario)}


def openai_sdk(governed: Any, project: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=governed.url + "/policy/v1", api_key=governed.keys[project],
                         max_retries=0, timeout=SDK_TIMEOUT, _strict_response_validation=True)


def anthropic_sdk(governed: Any, project: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=governed.url + "/policy", api_key=governed.keys[project],
                               max_retries=0, timeout=SDK_TIMEOUT,
                               _strict_response_validation=True)


def events_of(governed: Any, user: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The enforcement events of `user` once one arrived (a moment more for any duplicate)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not [
            e for e in governed.events() if e.get("policy_user") == user]:
        time.sleep(0.01)
    time.sleep(0.05)
    return [e for e in governed.events()
            if e["event_type"] == "enforcement" and e["policy_user"] == user]


def policy_of(item: Any) -> dict[str, Any]:
    policy = (item.model_extra or {}).get("policy")
    assert isinstance(policy, dict), f"{type(item).__name__} has no policy"
    return policy


# --- one streamed call per API, as an application makes it -----------------------------------------

class Streamed:
    """What a client got from one stream: the SDK events, the text deltas, how it ended."""

    def __init__(self, events: list[Any], deltas: list[str], error: Any = None) -> None:
        self.events = events
        self.text = "".join(deltas)
        #: The SDK's exception when the stream ended with an error event.
        self.error = error

    @property
    def policies(self) -> list[dict[str, Any]]:
        return [policy_of(event) for event in self.events]


def stream_chat(governed: Any, project: str, user: str, chunks: list[str]) -> Streamed:
    events: list[Any] = []
    error = None
    with openai_sdk(governed, project) as client:
        try:
            for event in client.chat.completions.create(
                    model="gpt-x", messages=[{"role": "user", "content": PROMPT}], stream=True,
                    extra_headers=headers(user, chunks=chunks, usage=USAGE)):
                events.append(event)
        except openai.APIError as exc:
            error = exc
    return Streamed(events, [c.choices[0].delta.content or "" for c in events if c.choices],
                    error)


def stream_responses(governed: Any, project: str, user: str, chunks: list[str]) -> Streamed:
    events: list[Any] = []
    error = None
    with openai_sdk(governed, project) as client:
        try:
            for event in client.responses.create(
                    model="gpt-x", input=PROMPT, stream=True,
                    extra_headers=headers(user, chunks=chunks, usage=USAGE)):
                events.append(event)
        except openai.APIError as exc:
            error = exc
    return Streamed(events, [e.delta for e in events if e.type == "response.output_text.delta"],
                    error)


def stream_messages(governed: Any, project: str, user: str, chunks: list[str]) -> Streamed:
    events: list[Any] = []
    error = None
    with anthropic_sdk(governed, project) as client:
        try:
            for event in client.messages.create(
                    model="claude-x", max_tokens=64, stream=True,
                    messages=[{"role": "user", "content": PROMPT}],
                    extra_headers=headers(user, chunks=chunks, usage=USAGE)):
                events.append(event)
        except anthropic.APIStatusError as exc:
            error = exc
    return Streamed(events, [e.delta.text for e in events if e.type == "content_block_delta"],
                    error)


STREAMERS = {"chat.completions": stream_chat, "messages": stream_messages,
             "responses": stream_responses}
by_surface = pytest.mark.parametrize("surface", list(STREAMERS))


def check_refusal_policy(policy: dict[str, Any], surface: str) -> None:
    assert (policy["decision"], policy["effective_decision"], policy["enforced"],
            policy["reason_code"], policy["denylist_hits"], policy["stage"],
            policy["policy_target"], policy["project_id"]) == (
        "refuse", "refuse", True, "INTERNAL_LEAK", [TERM], "output", surface, "proj_output")


def check_stopped(streamed: Streamed, surface: str) -> dict[str, Any]:
    """The stream ended with the API's own termination, on which the SDK raised the refusal
    (`policy_refused`, `permission_error`, as for a refused request); its `policy`."""
    error = streamed.error
    assert error is not None, "the SDK did not raise on the refusal"
    if surface == "messages":
        assert isinstance(error, anthropic.APIStatusError)
        assert (error.error_code, error.type) == ("policy_refused", "permission_error")
        assert [e.type for e in streamed.events].count("message_stop") == 0
        policy = error.body["policy"]  # type: ignore[index]
    else:
        assert isinstance(error, openai.APIError)
        assert (error.code, error.type) == ("policy_refused", "permission_error")
        policy = error.body["policy"]  # type: ignore[index]
    if surface == "chat.completions":
        last = streamed.events[-1]
        assert last.choices[0].finish_reason == "content_filter"
        assert [c.choices[0].finish_reason for c in streamed.events[:-1]] == [None] * (
            len(streamed.events) - 1)
        assert policy_of(last) == policy
    if surface == "responses":
        numbers = [e.sequence_number for e in streamed.events]
        assert numbers == sorted(set(numbers)), numbers
        assert not {"response.completed", "response.failed"} & {e.type for e in streamed.events}
    check_refusal_policy(policy, surface)
    return policy


# --- a term split across chunks is caught, and none of it reaches the client ----------------------

SPLITS = {
    f"2-chunks-at-{cut}": [PREFIX + "The code is " + TERM[:cut], TERM[cut:] + ", do not share."]
    for cut in (1, 7, 8, 11, 15)
}
SPLITS["3-chunks"] = [PREFIX + "The code is proj", "ect night", "jar, do not share."]


@by_surface
@pytest.mark.parametrize("chunks", list(SPLITS.values()), ids=list(SPLITS))
def test_split_term_stops_the_stream_before_any_of_it(governed: Any, mock: Any, surface: str,
                                                      chunks: list[str]) -> None:
    user = new_user()
    streamed = STREAMERS[surface](governed, "proj_output", user, chunks)
    full = "".join(chunks)
    policy = check_stopped(streamed, surface)
    # The client got a prefix of the text that ends before the term starts ...
    assert full.startswith(streamed.text)
    assert len(streamed.text) <= full.index(TERM)
    assert "proj" not in streamed.text
    # ... and not nothing: only the window the rules need was held back.
    assert len(streamed.text) >= len(PREFIX) - WINDOW > 0
    [event] = events_of(governed, user)
    assert (event["decision"], event["effective_decision"], event["reason_code"],
            event["status"], event["outcome"], event["stream"]) == (
        policy["decision"], policy["effective_decision"], policy["reason_code"], 200,
        "refused", True)
    # The hit is the policy's own term; none of the output text is in the event.
    assert event["denylist_hits"] == [TERM]
    leaked = [w for w in ("quokkaberry", "systems", "code is", "share")
              if w in json.dumps(event).lower()]
    assert leaked == []


@by_surface
def test_term_whole_in_one_chunk_stops_the_stream(governed: Any, mock: Any,
                                                  surface: str) -> None:
    chunks = [PREFIX + f"The code is {TERM}.", " More text."]
    streamed = STREAMERS[surface](governed, "proj_output", new_user(), chunks)
    check_stopped(streamed, surface)
    # All that certainly precedes the term is delivered, nothing of the term.
    assert "proj" not in streamed.text
    assert (PREFIX + "The code is ").startswith(streamed.text)


def test_text_a_window_before_a_term_in_the_same_chunk_is_delivered(governed: Any,
                                                                    mock: Any) -> None:
    chunks = [PREFIX + f"The code is {TERM}.", " More text."]
    streamed = stream_chat(governed, "proj_output", new_user(), chunks)
    check_stopped(streamed, "chat.completions")
    assert len(streamed.text) >= len(PREFIX) - WINDOW > 0


@by_surface
def test_frames_before_the_stop_carry_the_input_policy(governed: Any, mock: Any,
                                                       surface: str) -> None:
    streamed = STREAMERS[surface](governed, "proj_output", new_user(), SPLITS["3-chunks"])
    before = streamed.policies[:-1] if surface == "chat.completions" else streamed.policies
    assert before, "no frame reached the client before the stop"
    assert {(p["decision"], p["project_id"]) for p in before} == {("allow", "proj_output")}


def test_stopped_stream_closes_its_upstream_generators(governed: Any, mock: Any) -> None:
    user = new_user()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stream_chat(governed, "proj_output", user, SPLITS["3-chunks"])
        assert events_of(governed, user)  # the gateway finished the stream
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)
             and "gateway.upstream.exchange" in str(w.message)]
    assert leaks == []


# --- non-streamed output rules ---------------------------------------------------------------------

#: On topic for support_bot (proj_support), which refuses anything else.
ORDER = "Hi, about my order"
BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat.completions": ("/policy/v1/chat/completions",
                         {"model": "gpt-x", "messages": [{"role": "user", "content": ORDER}]}),
    "messages": ("/policy/v1/messages", {"model": "claude-x", "max_tokens": 64,
                                         "messages": [{"role": "user", "content": ORDER}]}),
    "responses": ("/policy/v1/responses", {"model": "gpt-x", "input": ORDER}),
}


def post(governed: Any, project: str, surface: str, user: str, *, stream: bool = False,
         **scenario: Any) -> httpx2.Response:
    path, body = BODIES[surface]
    return httpx2.post(governed.url + path, json={**body, "stream": stream}, timeout=SDK_TIMEOUT,
                      headers={"authorization": "Bearer " + governed.keys[project],
                               **headers(user, **scenario)})


def text_of(surface: str, payload: dict[str, Any]) -> str:
    if surface == "chat.completions":
        return str(payload["choices"][0]["message"]["content"])
    if surface == "messages":
        return "".join(block["text"] for block in payload["content"])
    return "".join(part["text"] for item in payload["output"] for part in item["content"])


@by_surface
def test_response_with_the_term_is_refused(governed: Any, mock: Any, surface: str) -> None:
    user = new_user()
    response = post(governed, "proj_output", surface, user, text=f"The code is {TERM}.",
                    usage=USAGE)
    assert response.status_code == 403
    payload = response.json()
    assert payload["error"]["code"] == "policy_refused"
    assert "nightjar" not in response.text.replace(TERM, "")  # only the hit names it
    check_refusal_policy(payload["policy"], surface)
    assert len([r for r in mock.requests if r.path.startswith("/v1/")]) == 1
    [event] = events_of(governed, user)
    assert (event["decision"], event["status"], event["outcome"]) == ("refuse", 403, "refused")
    # The upstream did the work: its tokens are counted although the client got nothing.
    assert event["usage"] == USAGE


@by_surface
def test_email_in_a_response_is_redacted(governed: Any, mock: Any, surface: str) -> None:
    user = new_user()
    text = f"Write to {EMAIL} for help."
    response = post(governed, "proj_output", surface, user, text=text)
    assert response.status_code == 200
    assert EMAIL.encode() not in response.content
    payload = response.json()
    assert text_of(surface, payload) == text.replace(EMAIL, REDACTED)
    assert payload["policy"]["redacted_spans"] == {"email": 1}


def test_response_policy_is_at_stage_output_after_output_rules(governed: Any,
                                                               mock: Any) -> None:
    response = post(governed, "proj_output", "chat.completions", new_user(), text="All fine.")
    assert response.status_code == 200
    assert response.json()["policy"]["stage"] == "output"


# --- streamed output redaction -----------------------------------------------------------------------

EMAIL_CHUNKS = ["Hello. Write to jane.doe@exa", "mple.com for help", " with your order."]
EMAIL_TEXT = "".join(EMAIL_CHUNKS)


@by_surface
def test_email_in_a_stream_is_redacted_for_the_client(governed: Any, mock: Any,
                                                      surface: str) -> None:
    response = post(governed, "proj_output", surface, new_user(), stream=True,
                    chunks=EMAIL_CHUNKS)
    assert response.status_code == 200
    assert b"jane.doe" not in response.content and b"example.com" not in response.content
    frames = [json.loads(data) for _, data in sse_events(response.content) if data != "[DONE]"]
    expected = EMAIL_TEXT.replace(EMAIL, REDACTED)
    if surface == "chat.completions":
        deltas = [f["choices"][0]["delta"].get("content") or "" for f in frames if f["choices"]]
    elif surface == "messages":
        deltas = [f["delta"]["text"] for f in frames if f["type"] == "content_block_delta"]
    else:
        deltas = [f["delta"] for f in frames if f["type"] == "response.output_text.delta"]
        # The frames that repeat the whole text repeat the redacted text.
        done = {f["type"]: f for f in frames}
        assert done["response.output_text.done"]["text"] == expected
        assert done["response.content_part.done"]["part"]["text"] == expected
        assert done["response.output_item.done"]["item"]["content"][0]["text"] == expected
        assert text_of(surface, done["response.completed"]["response"]) == expected
        numbers = [f["sequence_number"] for f in frames]
        assert numbers == sorted(set(numbers)), numbers
    assert "".join(deltas) == expected
    assert frames[-1]["policy"]["redacted_spans"] == {"email": 1}


def test_responses_sdk_reads_the_redacted_final_response(governed: Any, mock: Any) -> None:
    streamed = stream_responses(governed, "proj_output", new_user(), EMAIL_CHUNKS)
    completed = streamed.events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == streamed.text == EMAIL_TEXT.replace(EMAIL, REDACTED)


# --- shadow: the rule fires and is reported, nothing is enforced -------------------------------------

@by_surface
def test_shadow_reports_the_refusal_and_delivers_the_text(governed: Any, mock: Any,
                                                          surface: str) -> None:
    chunks = ["The code is project night", "jar, do not share.", " Bye."]
    streamed = STREAMERS[surface](governed, "proj_shadow", new_user(), chunks)
    assert streamed.error is None
    assert streamed.text == "".join(chunks)
    policies = streamed.policies
    # The frame of the chunk that completes the term is where the rule fired.
    delta_types = ("content_block_delta", "response.output_text.delta")
    delta_indexes = [i for i, e in enumerate(streamed.events)
                     if getattr(e, "type", None) in delta_types
                     or (surface == "chat.completions" and e.choices
                         and e.choices[0].delta.content is not None)]
    if surface == "chat.completions":
        delta_indexes = delta_indexes[1:]  # the role chunk's empty content is not a chunk
    fired = delta_indexes[1]
    assert [p["decision"] for p in policies[:fired]] == ["allow"] * fired
    for policy in policies[fired:]:
        assert (policy["decision"], policy["effective_decision"], policy["enforced"],
                policy["rollout_mode"], policy["stage"], policy["reason_code"]) == (
            "refuse", "allow", False, "shadow", "output", "INTERNAL_LEAK")


def test_shadow_response_is_delivered_with_the_refusal_reported(governed: Any,
                                                                mock: Any) -> None:
    user = new_user()
    response = post(governed, "proj_shadow", "messages", user, text=f"The code is {TERM}.")
    assert response.status_code == 200
    payload = response.json()
    assert text_of("messages", payload) == f"The code is {TERM}."
    policy = payload["policy"]
    assert (policy["decision"], policy["effective_decision"], policy["enforced"],
            policy["rollout_mode"], policy["stage"]) == ("refuse", "allow", False, "shadow",
                                                         "output")
    [event] = events_of(governed, user)
    assert (event["decision"], event["effective_decision"], event["enforced"],
            event["outcome"]) == ("refuse", "allow", False, "completed")


# --- usage ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("client_asked", [False, True], ids=["not-asked", "asked"])
def test_chat_stream_usage_is_asked_for_and_shown_only_when_the_client_asked(
        governed: Any, mock: Any, client_asked: bool) -> None:
    user = new_user()
    options = {"include_usage": True} if client_asked else None
    with openai_sdk(governed, "proj_support") as client:
        chunks: list[Any] = list(client.chat.completions.create(
            model="gpt-x", messages=[{"role": "user", "content": "My order?"}], stream=True,
            stream_options=options,  # type: ignore[arg-type]
            extra_headers=headers(user, chunks=["Ships ", "today."], usage=USAGE)))
    [request] = [r for r in mock.requests if r.path == "/v1/chat/completions"]
    assert request.json["stream_options"] == {"include_usage": True}
    usage_chunks = [c for c in chunks if c.usage is not None]
    if client_asked:
        [last] = usage_chunks
        assert last is chunks[-1] and last.choices == []
        assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (17, 5)
        assert policy_of(last)["project_id"] == "proj_support"
    else:
        assert usage_chunks == [] and all(c.choices for c in chunks)
    [event] = events_of(governed, user)
    assert event["usage"] == USAGE


@by_surface
def test_event_usage_is_the_upstreams_usage_on_every_stream(governed: Any, mock: Any,
                                                            surface: str) -> None:
    user = new_user()
    response = post(governed, "proj_support", surface, user, stream=True,
                    chunks=["Your order ", "ships."], usage=USAGE)
    assert response.status_code == 200
    [event] = events_of(governed, user)
    assert (event["usage"], event["outcome"], event["status"], event["stream"]) == (
        USAGE, "completed", 200, True)
