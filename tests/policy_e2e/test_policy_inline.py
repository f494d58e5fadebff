"""Inline policies in the body field `policy` (docs/policy-language.md, docs/governed-surface.md).

On `/v1/*` an inline policy is enforced for that one request and the answer stays transparent
unless refused. On `/policy/*` it is evaluated beside the project's policy and the more severe
outcome wins, so a caller can tighten but never loosen a project's governance; only a project
with `allow_inline_policy` lets it replace the project's policy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

TIMEOUT = 10.0
ORDER = "Where is my order?"
OFF_TOPIC = "Tell me a joke about penguins."
APIS: dict[str, tuple[str, Callable[[str], dict[str, Any]]]] = {
    "chat": ("/chat/completions",
             lambda text: {"model": "gpt-x", "messages": [{"role": "user", "content": text}]}),
    "messages": ("/messages",
                 lambda text: {"model": "claude-x", "max_tokens": 32,
                               "messages": [{"role": "user", "content": text}]}),
    "responses": ("/responses", lambda text: {"model": "gpt-x", "input": text}),
}
ALL_APIS = sorted(APIS)

REFUSE_ORDERS_POL = """policy v1 "no_orders" {
  default allow
  denylist words = ["order"]
  rule no_orders {
    when input contains any of words
    then refuse reason NO_ORDERS message "Orders are out of scope here."
  }
}"""
REFUSE_ORDERS_JSON = {"name": "no orders", "config": {"rules": {
    "denylist": ["order"], "enforcement_action": "block"}}}
ALLOW_ALL_POL = 'policy v1 "anything_goes" {\n  default allow\n}'
REWRITE_PENGUINS_POL = """policy v1 "penguins" {
  default allow
  rewrite_instruction "Keep penguin jokes kind."
  rule penguins { when input contains "penguins" then rewrite }
}"""
REDACT_EMAIL_POL = """policy v1 "no_emails" {
  default allow
  rule emails { when pii email then allow redact pii email }
}"""
OUTPUT_GUARD_POL = """policy v1 "no_bananas_out" {
  default allow
  rule bananas { when output contains "banana" then refuse reason BANANA_OUT }
}"""


def body_of(api: str, text: str, **extra: Any) -> dict[str, Any]:
    return {**APIS[api][1](text), **extra}


def send(governed: Any, prefix: str, api: str, body: dict[str, Any], key: str | None = None,
         headers: dict[str, str] | None = None) -> httpx2.Response:
    auth = {"authorization": f"Bearer {key or governed.keys['proj_support']}"}
    return httpx2.post(governed.url + prefix + APIS[api][0], json=body,
                      headers={**auth, **(headers or {})}, timeout=TIMEOUT)


def error_code(api: str, response: httpx2.Response) -> str:
    body = response.json()
    if api == "messages":
        assert body["type"] == "error", body
        assert set(body["error"]) == {"type", "message", "code", "details"}
    else:
        assert set(body["error"]) == {"message", "type", "param", "code"}
    return str(body["error"]["code"])


# --- /v1: enforced for the request, transparent otherwise -----------------------------------------


@pytest.mark.parametrize("source", [REFUSE_ORDERS_POL, REFUSE_ORDERS_JSON],
                         ids=["pol", "json"])
@pytest.mark.parametrize("api", ALL_APIS)
def test_on_compat_a_refusing_inline_policy_is_enforced(governed, mock, api, source):
    response = send(governed, "/v1", api, body_of(api, ORDER, policy=source))
    assert response.status_code == 403, response.text
    assert error_code(api, response) == "policy_refused"
    assert "policy" not in response.json()
    if source == REFUSE_ORDERS_POL:
        assert response.json()["error"]["message"] == "Orders are out of scope here."
    assert mock.requests == []


@pytest.mark.parametrize("source", [REFUSE_ORDERS_POL, REFUSE_ORDERS_JSON, ALLOW_ALL_POL],
                         ids=["pol", "json", "allow-all"])
@pytest.mark.parametrize("api", ALL_APIS)
def test_on_compat_an_allowing_inline_policy_is_transparent(governed, mock, api, source):
    body = body_of(api, OFF_TOPIC, temperature=0.5)
    response = send(governed, "/v1", api, {**body, "policy": source})
    assert response.status_code == 200, response.text
    assert "policy" not in response.json()
    assert mock.requests[-1].json == body


def test_on_compat_an_inline_rewrite_and_redaction_are_carried_out(governed, mock):
    rewrite = send(governed, "/v1", "chat", body_of("chat", OFF_TOPIC,
                                                    policy=REWRITE_PENGUINS_POL))
    assert rewrite.status_code == 200 and "policy" not in rewrite.json()
    assert mock.requests[-1].json["messages"] == [
        {"role": "system", "content": "Keep penguin jokes kind."},
        {"role": "user", "content": OFF_TOPIC}]
    redact = send(governed, "/v1", "messages", body_of("messages", "Mail me at ann@example.org",
                                                       policy=REDACT_EMAIL_POL))
    assert redact.status_code == 200 and "policy" not in redact.json()
    assert mock.requests[-1].json["messages"] == [
        {"role": "user", "content": "Mail me at [REDACTED:EMAIL]"}]


@pytest.mark.parametrize("prefix", ["/v1", "/policy"])
def test_a_null_inline_policy_is_no_policy_and_never_forwarded(governed, mock, prefix):
    body = body_of("chat", ORDER)
    response = send(governed, prefix, "chat", {**body, "policy": None})
    assert response.status_code == 200, response.text
    assert "policy" not in mock.requests[-1].json
    assert mock.requests[-1].json["messages"] == body["messages"]


@pytest.mark.parametrize("api", ALL_APIS)
def test_on_compat_a_broken_inline_policy_is_invalid_policy(governed, mock, api):
    response = send(governed, "/v1", api, body_of(api, ORDER, policy=ALLOW_ALL_POL.replace(
        "allow", "allw")))
    assert response.status_code == 400
    assert error_code(api, response) == "invalid_policy"
    assert "did you mean `allow`?" in response.json()["error"]["message"]
    assert mock.requests == []


def test_on_compat_no_event_is_emitted_for_an_inline_policy(governed, mock):
    before = len(governed.events())
    send(governed, "/v1", "chat", body_of("chat", ORDER, policy=REFUSE_ORDERS_POL))
    send(governed, "/v1", "chat", body_of("chat", OFF_TOPIC, policy=REFUSE_ORDERS_POL))
    assert len(governed.events()) == before


# --- /policy: the more severe outcome wins ----------------------------------------------------------


@pytest.mark.parametrize("source", [REFUSE_ORDERS_POL, REFUSE_ORDERS_JSON],
                         ids=["pol", "json"])
@pytest.mark.parametrize("api", ALL_APIS)
def test_on_policy_a_stricter_inline_policy_wins(governed, mock, api, source):
    plain = send(governed, "/policy", api, body_of(api, ORDER))
    assert plain.status_code == 200 and plain.json()["policy"]["decision"] == "allow"
    mock.reset()
    response = send(governed, "/policy", api, body_of(api, ORDER, policy=source))
    assert response.status_code == 403, response.text
    assert error_code(api, response) == "policy_refused"
    policy = response.json()["policy"]
    assert (policy["decision"], policy["effective_decision"], policy["project_id"]) == (
        "refuse", "refuse", "proj_support")
    assert policy["reason_code"] == ("NO_ORDERS" if source == REFUSE_ORDERS_POL else "REFUSE")
    assert policy["allowlist_hits"] == ["order"] and policy["denylist_hits"] == ["order"]
    assert mock.requests == []


@pytest.mark.parametrize("api", ALL_APIS)
def test_on_policy_a_looser_inline_policy_never_loosens_the_project(governed, mock, api):
    for source in (ALLOW_ALL_POL, {"name": "open", "config": {"rules": {}}}):
        response = send(governed, "/policy", api, body_of(api, OFF_TOPIC, policy=source))
        assert response.status_code == 403, response.text
        assert error_code(api, response) == "policy_refused"
        assert response.json()["policy"]["reason_code"] == "OFF_TOPIC"
    assert mock.requests == []


def test_on_policy_a_rewrite_of_the_project_beats_an_inline_allow(governed, mock):
    response = send(governed, "/policy", "chat", body_of(
        "chat", "Do you have a discount code for my order?", policy=ALLOW_ALL_POL))
    assert response.status_code == 200, response.text
    assert response.json()["policy"]["decision"] == "rewrite"
    assert mock.requests[-1].json["messages"][0]["role"] == "system"


def test_on_policy_redactions_of_the_project_and_the_inline_policy_compose(governed, mock):
    text = "My order is late, mail me at ann@example.org"
    response = send(governed, "/policy", "chat", body_of("chat", text, policy=REDACT_EMAIL_POL))
    assert response.status_code == 200, response.text
    policy = response.json()["policy"]
    assert policy["redacted_spans"] == {"email": 1}
    assert policy["allowlist_hits"] == ["order"]
    assert mock.requests[-1].json["messages"] == [
        {"role": "user", "content": "My order is late, mail me at [REDACTED:EMAIL]"}]


def test_on_policy_an_inline_output_rule_is_enforced_too(governed, mock):
    scenario = {"x-mock-scenario": json.dumps({"text": "Your banana order ships today."})}
    allowed = send(governed, "/policy", "chat", body_of("chat", ORDER), headers=scenario)
    assert allowed.status_code == 200, allowed.text
    refused = send(governed, "/policy", "chat", body_of("chat", ORDER, policy=OUTPUT_GUARD_POL),
                   headers=scenario)
    assert refused.status_code == 403, refused.text
    policy = refused.json()["policy"]
    assert (policy["decision"], policy["reason_code"], policy["stage"]) == (
        "refuse", "BANANA_OUT", "output")
    assert "banana" not in refused.text.replace("no_bananas_out", "")


# --- /policy with allow_inline_policy: the inline policy replaces the project's -----------------


@pytest.mark.parametrize("api", ALL_APIS)
def test_with_allow_inline_policy_the_inline_policy_replaces_the_projects(governed, mock, api):
    key = governed.keys["proj_inline"]
    without = send(governed, "/policy", api, body_of(api, OFF_TOPIC), key=key)
    assert without.status_code == 403  # the project's own policy (support_bot) still applies
    loosened = send(governed, "/policy", api, body_of(api, OFF_TOPIC, policy=ALLOW_ALL_POL),
                    key=key)
    assert loosened.status_code == 200, loosened.text
    assert (loosened.json()["policy"]["decision"], loosened.json()["policy"]["project_id"]) == (
        "allow", "proj_inline")
    assert mock.requests[-1].json == body_of(api, OFF_TOPIC)
    tightened = send(governed, "/policy", api, body_of(api, ORDER, policy=REFUSE_ORDERS_JSON),
                     key=key)
    assert tightened.status_code == 403, tightened.text
    assert tightened.json()["policy"]["denylist_hits"] == ["order"]


def test_without_allow_inline_policy_the_same_inline_policy_does_not_replace(governed, mock):
    response = send(governed, "/policy", "chat", body_of("chat", OFF_TOPIC,
                                                         policy=ALLOW_ALL_POL))
    assert response.status_code == 403
    assert response.json()["policy"]["reason_code"] == "OFF_TOPIC"


@pytest.mark.parametrize("prefix", ["/v1", "/policy"])
@pytest.mark.parametrize("api", ALL_APIS)
def test_an_inline_policy_nested_too_deep_is_invalid_policy(governed, mock, api, prefix):
    body = json.dumps(body_of(api, ORDER)).encode()
    content = body[:-1] + b', "policy": ' + b'{"a": ' * 300 + b"1" + b"}" * 300 + b"}"
    response = httpx2.post(governed.url + prefix + APIS[api][0], content=content,
                          timeout=TIMEOUT, headers={
                              "authorization": f"Bearer {governed.keys['proj_support']}"})
    assert response.status_code == 400, response.text
    assert error_code(api, response) == "invalid_policy"
    assert mock.requests == []
