"""Each decision on each API (docs/governed-surface.md), end to end: what the upstream receives (or
that it is not called at all), what the client gets, and the one enforcement event per request
(docs/events.md) with the fields the client was told and no prompt text.

The instructions and messages expected here are read from the policy files, so the tests say
"the policy's rewrite instruction reached the upstream" rather than repeating gateway output."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from e2e.support import SDK_TIMEOUT

HERE = Path(__file__).parent
#: A word in every prompt of this module: no event may ever contain it (docs/classifiers.md,
#: docs/events.md).
MARKER = "Quokkaberry"
EMAIL = "jane.doe.quokka@example.com"


def policy_setting(path: Path, name: str) -> str:
    """A quoted setting (`rewrite_instruction "..."`) of a `.pol` file."""
    match = re.search(rf'^\s*{name}\s+"([^"]*)"', path.read_text(), re.MULTILINE)
    assert match, f"{name} not in {path}"
    return match.group(1)


REWRITE_INSTRUCTION = policy_setting(HERE.parents[1] / "policies" / "support_bot.pol",
                                     "rewrite_instruction")
SUMMARY_INSTRUCTION = policy_setting(HERE / "policies" / "escalation.pol", "summary_instruction")
ESCALATION_MESSAGE = policy_setting(HERE / "policies" / "escalation.pol", "escalation_message")


# --- the three APIs ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Api:
    surface: str
    path: str
    upstream_path: str
    body: Callable[[str], dict[str, Any]]
    #: Where the API keeps its system instruction in a request body.
    instruction_of: Callable[[dict[str, Any]], Any]
    #: The assistant text of a non-streamed response.
    text_of: Callable[[dict[str, Any]], str]

    def error_of(self, body: dict[str, Any]) -> dict[str, Any]:
        """The `error` object after checking the API's envelope (docs/reference.md)."""
        error = body["error"]
        if self.surface == "messages":
            assert body["type"] == "error"
            assert set(error) == {"type", "message", "code", "details"}
        else:
            assert set(error) == {"message", "type", "param", "code"}
        return dict(error)


def _chat_instruction(body: dict[str, Any]) -> Any:
    first = body["messages"][0]
    return first["content"] if first["role"] == "system" else None


CHAT = Api(
    "chat.completions", "/policy/v1/chat/completions", "/v1/chat/completions",
    lambda text: {"model": "gpt-x", "messages": [{"role": "user", "content": text}]},
    _chat_instruction,
    lambda r: r["choices"][0]["message"]["content"],
)
MESSAGES = Api(
    "messages", "/policy/v1/messages", "/v1/messages",
    lambda text: {"model": "claude-x", "max_tokens": 64,
                  "messages": [{"role": "user", "content": text}]},
    lambda body: body.get("system"),
    lambda r: "".join(block["text"] for block in r["content"]),
)
RESPONSES = Api(
    "responses", "/policy/v1/responses", "/v1/responses",
    lambda text: {"model": "gpt-x", "input": text},
    lambda body: body.get("instructions"),
    lambda r: "".join(part["text"] for item in r["output"] for part in item["content"]),
)
APIS = [CHAT, MESSAGES, RESPONSES]
by_surface = pytest.mark.parametrize("api", APIS, ids=[a.surface for a in APIS])


# --- helpers -------------------------------------------------------------------------------------

def new_user() -> str:
    return "dec-" + uuid.uuid4().hex[:12]


def call(governed: Any, api: Api, project: str, body: dict[str, Any], user: str,
         **scenario: Any) -> httpx2.Response:
    headers = {"authorization": "Bearer " + governed.keys[project], "x-policy-user": user}
    if scenario:
        headers["x-mock-scenario"] = json.dumps(scenario)
    return httpx2.post(governed.url + api.path, json=body, headers=headers, timeout=SDK_TIMEOUT)


def api_requests(mock: Any) -> list[Any]:
    """What the mock received on the provider APIs (escalation POSTs excluded)."""
    return [r for r in mock.requests if r.path.startswith("/v1/")]


def events_of(governed: Any, user: str, count: int = 1, timeout: float = 5.0
              ) -> list[dict[str, Any]]:
    """The enforcement events of `user`, once `count` arrived; waits a moment more so that a
    second event for the same request would be seen too."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in governed.events()
                 if e["event_type"] == "enforcement" and e["policy_user"] == user]
        if len(found) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    time.sleep(0.05)
    return [e for e in governed.events()
            if e["event_type"] == "enforcement" and e["policy_user"] == user]


def check_event(event: dict[str, Any], policy: dict[str, Any], *, status: int, outcome: str,
                surface: str) -> None:
    """The event says what the client was told in its `policy` object."""
    told = {k: policy[k] for k in ("policy_id", "decision", "effective_decision", "enforced",
                                   "rollout_mode", "reason_code", "denylist_hits",
                                   "allowlist_hits", "redacted_spans", "project_id",
                                   "policy_target", "policy_user")}
    assert {k: event[k] for k in told} == told
    assert (event["status"], event["outcome"], event["surface"]) == (status, outcome, surface)
    text = json.dumps(event).lower()
    assert MARKER.lower() not in text and "quokka" not in text


# --- allow ---------------------------------------------------------------------------------------

@by_surface
def test_allow_forwards_the_body_unchanged(governed: Any, mock: Any, api: Api) -> None:
    user = new_user()
    body = api.body(f"Where is my order of {MARKER} jam?")
    response = call(governed, api, "proj_support", body, user,
                    text="It ships today.", usage={"input_tokens": 17, "output_tokens": 5})
    assert response.status_code == 200, response.text
    assert [r.json for r in api_requests(mock)] == [body]
    payload = response.json()
    assert api.text_of(payload) == "It ships today."
    policy = payload["policy"]
    assert (policy["decision"], policy["effective_decision"], policy["reason_code"]) == (
        "allow", "allow", "ALLOW")
    [event] = events_of(governed, user)
    check_event(event, policy, status=200, outcome="completed", surface=api.surface)
    assert event["usage"] == {"input_tokens": 17, "output_tokens": 5}
    assert event["stream"] is False


# --- rewrite and summary: the instruction in the API's own system place ----------------------------

@by_surface
def test_rewrite_adds_the_policy_instruction_in_the_apis_system_place(
        governed: Any, mock: Any, api: Api) -> None:
    user = new_user()
    body = api.body(f"Is there a discount code for my {MARKER} order?")
    response = call(governed, api, "proj_support", body, user)
    assert response.status_code == 200, response.text
    [sent] = [r.json for r in api_requests(mock)]
    assert api.instruction_of(sent) == REWRITE_INSTRUCTION
    if api is CHAT:  # the client's own messages follow the leading system message
        assert sent["messages"][1:] == body["messages"]
    policy = response.json()["policy"]
    assert (policy["decision"], policy["effective_decision"]) == ("rewrite", "rewrite")
    assert "discount code" in policy["denylist_hits"]


def test_rewrite_keeps_the_clients_own_system_text(governed: Any, mock: Any) -> None:
    user = new_user()
    chat = {"model": "gpt-x", "messages": [{"role": "system", "content": "Be brief."},
                                           {"role": "user", "content": "A discount code?"
                                                                       " For my order."}]}
    messages = {**MESSAGES.body("A discount code for my order?"), "system": "Be brief."}
    responses = {**RESPONSES.body("A discount code for my order?"), "instructions": "Be brief."}
    for api, body in ((CHAT, chat), (MESSAGES, messages), (RESPONSES, responses)):
        assert call(governed, api, "proj_support", body, user).status_code == 200
    sent = [r.json for r in api_requests(mock)]
    assert sent[0]["messages"] == [{"role": "system", "content": REWRITE_INSTRUCTION},
                                   *chat["messages"]]
    for forwarded in (sent[1]["system"], sent[2]["instructions"]):
        assert forwarded.startswith(REWRITE_INSTRUCTION) and forwarded.endswith("Be brief.")


@by_surface
def test_summary_adds_the_summary_instruction(governed: Any, mock: Any, api: Api) -> None:
    user = new_user()
    body = api.body(f"Could you explain briefly how {MARKER} refunds work?")
    response = call(governed, api, "proj_escalate", body, user)
    assert response.status_code == 200, response.text
    [sent] = [r.json for r in api_requests(mock)]
    assert api.instruction_of(sent) == SUMMARY_INSTRUCTION
    policy = response.json()["policy"]
    assert (policy["decision"], policy["effective_decision"]) == ("summary", "summary")


# --- escalate --------------------------------------------------------------------------------------

def wait_for_escalation(mock: Any, user: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        posts = [r.json for r in mock.requests
                 if r.path == "/escalations" and r.json.get("policy_user") == user]
        if posts:
            return dict(posts[0])
        time.sleep(0.01)
    raise AssertionError("no escalation POST arrived")


def sdk_holding_reply(governed: Any, api: Api, text: str, user: str) -> tuple[str, Any]:
    """The holding reply as the official SDK parses it: (its text, its `policy`)."""
    key, extra = governed.keys["proj_escalate"], {"x-policy-user": user}
    if api is MESSAGES:
        with anthropic.Anthropic(base_url=governed.url + "/policy", api_key=key, max_retries=0,
                                 timeout=SDK_TIMEOUT,
                                 _strict_response_validation=True) as aclient:
            message = aclient.messages.create(model="claude-x", max_tokens=64, extra_headers=extra,
                                              messages=[{"role": "user", "content": text}])
        return sdk_text_and_policy(message, message.content[0])
    with openai.OpenAI(base_url=governed.url + "/policy/v1", api_key=key, max_retries=0,
                       timeout=SDK_TIMEOUT, _strict_response_validation=True) as client:
        if api is CHAT:
            completion = client.chat.completions.create(
                model="gpt-x", messages=[{"role": "user", "content": text}], extra_headers=extra)
            return sdk_text_and_policy(completion, completion.choices[0].message, "content")
        response = client.responses.create(model="gpt-x", input=text, extra_headers=extra)
        return sdk_text_and_policy(response, response, "output_text")


def sdk_text_and_policy(reply: Any, holder: Any, attribute: str = "text") -> tuple[str, Any]:
    """The text an SDK object holds and the `policy` the SDK kept as an extra field."""
    return getattr(holder, attribute), (reply.model_extra or {})["policy"]


@by_surface
def test_escalate_answers_a_holding_reply_and_notifies(governed: Any, mock: Any,
                                                       api: Api) -> None:
    user = new_user()
    text, policy = sdk_holding_reply(governed, api, f"Let me speak to a human about {MARKER}",
                                     user)
    assert text == ESCALATION_MESSAGE
    assert (policy["decision"], policy["effective_decision"], policy["reason_code"]) == (
        "escalate", "escalate", "HUMAN_REQUESTED")
    notified = wait_for_escalation(mock, user)
    assert api_requests(mock) == []
    [event] = events_of(governed, user)
    check_event(event, policy, status=200, outcome="escalated", surface=api.surface)
    # The escalation path receives the request's event (docs/governed-surface.md); timings may
    # differ.
    assert without(notified, *VOLATILE) == without(event, *VOLATILE)


VOLATILE = ("event_id", "created_at", "latency_ms", "overhead_ms")


def without(event: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in keys}


def test_escalation_notification_is_the_recorded_event(governed: Any, mock: Any) -> None:
    user = new_user()
    sdk_holding_reply(governed, CHAT, "I want to speak to a human", user)
    notified = wait_for_escalation(mock, user)
    [event] = events_of(governed, user)
    assert notified["event_id"] == event["event_id"]


@by_surface
def test_escalated_stream_is_answered_without_sse(governed: Any, mock: Any, api: Api) -> None:
    user = new_user()
    body = {**api.body("I want to speak to a human"), "stream": True}
    response = call(governed, api, "proj_escalate", body, user)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    assert api.text_of(payload) == ESCALATION_MESSAGE
    assert payload["policy"]["decision"] == "escalate"
    wait_for_escalation(mock, user)
    assert api_requests(mock) == []
    [event] = events_of(governed, user)
    assert event["stream"] is True


# --- refuse ----------------------------------------------------------------------------------------

@by_surface
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_refuse_is_403_in_the_apis_error_shape(governed: Any, mock: Any, api: Api,
                                              stream: bool) -> None:
    user = new_user()
    body = {**api.body(f"You idiot, where is my {MARKER} order?"), "stream": stream}
    response = call(governed, api, "proj_support", body, user)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    error = api.error_of(payload)
    assert error["code"] == "policy_refused"
    assert error["message"] == "Let's keep this conversation respectful."  # the rule's message
    policy = payload["policy"]
    assert (policy["decision"], policy["effective_decision"], policy["reason_code"],
            policy["denylist_hits"]) == ("refuse", "refuse", "ABUSIVE_LANGUAGE", ["idiot"])
    assert api_requests(mock) == []
    [event] = events_of(governed, user)
    check_event(event, policy, status=403, outcome="refused", surface=api.surface)


def test_sdks_raise_permission_denied_on_a_refusal(governed: Any, mock: Any) -> None:
    key, text = governed.keys["proj_support"], "Shut up and find my order"
    with openai.OpenAI(base_url=governed.url + "/policy/v1", api_key=key, max_retries=0,
                       timeout=SDK_TIMEOUT) as client:
        with pytest.raises(openai.PermissionDeniedError) as chat_error:
            client.chat.completions.create(model="gpt-x",
                                           messages=[{"role": "user", "content": text}])
        with pytest.raises(openai.PermissionDeniedError):
            client.responses.create(model="gpt-x", input=text, stream=True)
    with anthropic.Anthropic(base_url=governed.url + "/policy", api_key=key, max_retries=0,
                             timeout=SDK_TIMEOUT) as aclient:
        with pytest.raises(anthropic.PermissionDeniedError) as messages_error:
            aclient.messages.create(model="claude-x", max_tokens=64,
                                    messages=[{"role": "user", "content": text}])
    assert chat_error.value.code == "policy_refused"
    assert isinstance(messages_error.value.body, dict)
    assert messages_error.value.body["policy"]["reason_code"] == "ABUSIVE_LANGUAGE"
    assert api_requests(mock) == []


# --- redaction -------------------------------------------------------------------------------------

@by_surface
def test_pii_in_the_prompt_is_redacted_before_forwarding(governed: Any, mock: Any,
                                                         api: Api) -> None:
    user = new_user()
    body = api.body(f"Please write to {EMAIL} about {MARKER}")
    response = call(governed, api, "proj_pii", body, user)
    assert response.status_code == 200, response.text
    [request] = api_requests(mock)
    assert EMAIL.encode() not in request.body
    assert request.json == api.body(f"Please write to [REDACTED:EMAIL] about {MARKER}")
    policy = response.json()["policy"]
    assert policy["redacted_spans"] == {"email": 1}
    [event] = events_of(governed, user)
    assert event["redacted_spans"] == {"email": 1}
    assert EMAIL not in json.dumps(event)


# --- upstream failure --------------------------------------------------------------------------------

@by_surface
def test_upstream_500_passes_through_with_policy_and_one_event(governed: Any, mock: Any,
                                                               api: Api) -> None:
    user = new_user()
    response = call(governed, api, "proj_support", api.body(f"My {MARKER} order?"), user,
                    mode="status", status=500)
    assert response.status_code == 500
    payload = response.json()
    assert "error" in payload
    policy = payload["policy"]
    assert policy["decision"] == "allow"
    [event] = events_of(governed, user)
    check_event(event, policy, status=500, outcome="upstream_error", surface=api.surface)
