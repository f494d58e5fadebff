"""Who is calling and under which project, target and user (docs/governed-surface.md,
docs/management.md, docs/security.md, docs/events.md).

Every route alias serves the same surface; each gateway value is shown to take effect from its
header and from each body alias, the header winning; what the upstream receives carries none of
the gateway's fields and none of the client's credentials; JWT users reach granted projects.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from e2e.harness import UPSTREAM_ANTHROPIC_KEY, UPSTREAM_OPENAI_KEY

from gateway.policy.governance import GATEWAY_BODY_FIELDS

TIMEOUT = 10.0
ORDER = "Where is my order?"
MESSAGES = [{"role": "user", "content": ORDER}]
#: api -> (path after the prefix, a valid body, surface name, upstream path)
APIS: dict[str, tuple[str, dict[str, Any], str, str]] = {
    "chat": ("/chat/completions", {"model": "gpt-x", "messages": MESSAGES}, "chat.completions",
             "/v1/chat/completions"),
    "messages": ("/messages", {"model": "claude-x", "max_tokens": 32, "messages": MESSAGES},
                 "messages", "/v1/messages"),
    "responses": ("/responses", {"model": "gpt-x", "input": ORDER}, "responses",
                  "/v1/responses"),
}
PREFIXES = ("/policy", "/policy/v1")


def post(governed: Any, path: str, body: Any, key: str | None = None,
         headers: dict[str, str] | None = None) -> httpx2.Response:
    auth = {"authorization": f"Bearer {key or governed.keys['proj_support']}"}
    return httpx2.post(governed.url + path, json=body, headers={**auth, **(headers or {})},
                      timeout=TIMEOUT)


def key_id(governed: Any, plaintext: str) -> str:
    """The id of a fixture key, found by its preview (the store never keeps the plaintext)."""
    from gateway.identity.keys import preview

    (record,) = [k for k in governed.gateway.store.list_keys(governed.account_id)
                 if k.key_preview == preview(plaintext)]
    return record.id


def event_for(governed: Any, **match: Any) -> dict[str, Any]:
    """The newest enforcement event whose fields equal `match`."""
    for event in reversed(governed.events()):
        if event["event_type"] == "enforcement" and all(event.get(k) == v
                                                       for k, v in match.items()):
            return event
    raise AssertionError(f"no enforcement event with {match}")


# --- route aliases -------------------------------------------------------------------------------


@pytest.mark.parametrize("api", sorted(APIS))
def test_both_prefixes_route_to_the_same_governed_surface(governed, mock, api):
    suffix, body, surface, upstream_path = APIS[api]
    answers = []
    for prefix in PREFIXES:
        response = post(governed, prefix + suffix, body)
        assert response.status_code == 200, response.text
        answers.append((response.json()["policy"], mock.requests[-1].path,
                        mock.requests[-1].json))
    assert answers[0] == answers[1]
    policy, path, upstream_body = answers[0]
    assert (policy["project_id"], policy["policy_target"], policy["allowlist_hits"]) == (
        "proj_support", surface, ["order"])
    assert path == upstream_path and upstream_body == body


@pytest.mark.parametrize("prefix", PREFIXES)
def test_models_and_count_tokens_are_served_under_both_prefixes(governed, mock, prefix):
    key = {"authorization": f"Bearer {governed.keys['proj_support']}"}
    models = httpx2.get(governed.url + prefix + "/models", headers=key, timeout=TIMEOUT)
    plain = httpx2.get(governed.url + "/v1/models", headers=key, timeout=TIMEOUT)
    assert models.status_code == 200 and models.json() == plain.json()
    assert models.json()["data"], models.text
    body = {"model": "claude-x", "messages": MESSAGES}
    counted = post(governed, prefix + "/messages/count_tokens", body)
    assert counted.status_code == 200, counted.text
    assert counted.json() == post(governed, "/v1/messages/count_tokens", body).json()
    assert isinstance(counted.json()["input_tokens"], int)
    assert [r.path for r in mock.requests] == ["/v1/models", "/v1/models",
                                              "/v1/messages/count_tokens",
                                              "/v1/messages/count_tokens"]


@pytest.mark.parametrize("path", ["/policy/models", "/policy/v1/models"])
def test_the_alias_routes_are_policy_gateway_routes_too(governed, mock, path):
    response = httpx2.get(governed.url + path, timeout=TIMEOUT,
                         headers={"authorization": f"Bearer {governed.free_key}"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "policy_gateway_plan_required"
    assert mock.requests == []


def test_the_openai_sdk_works_with_base_url_policy_v1(governed, mock):
    with openai.OpenAI(base_url=governed.url + "/policy/v1",
                       api_key=governed.keys["proj_support"], max_retries=0,
                       timeout=TIMEOUT) as client:
        chat = client.chat.completions.create(model="gpt-x",
                                              messages=MESSAGES)  # type: ignore[arg-type]
        reply = client.responses.create(model="gpt-x", input=ORDER)
        models = client.models.list()
    assert chat.model_extra is not None and chat.model_extra["policy"]["policy_target"] == (
        "chat.completions")
    assert chat.choices[0].message.content
    assert reply.model_extra is not None and reply.model_extra["policy"]["policy_target"] == (
        "responses")
    assert reply.output_text
    assert [m.id for m in models.data]
    assert [r.path for r in mock.requests] == ["/v1/chat/completions", "/v1/responses",
                                              "/v1/models"]


def test_the_anthropic_sdk_works_with_base_url_policy(governed, mock):
    with anthropic.Anthropic(base_url=governed.url + "/policy",
                             api_key=governed.keys["proj_support"], max_retries=0,
                             timeout=TIMEOUT) as client:
        message = client.messages.create(model="claude-x", max_tokens=32,
                                         messages=MESSAGES)  # type: ignore[arg-type]
        counted = client.messages.count_tokens(model="claude-x",
                                               messages=MESSAGES)  # type: ignore[arg-type]
    assert message.model_extra is not None
    assert message.model_extra["policy"]["project_id"] == "proj_support"
    assert message.content[0].type == "text"
    assert counted.input_tokens > 0
    assert [r.path for r in mock.requests] == ["/v1/messages", "/v1/messages/count_tokens"]
    # The Anthropic SDK authenticates with `x-api-key`; the upstream got the gateway's own key.
    assert mock.requests[0].headers["x-api-key"] == UPSTREAM_ANTHROPIC_KEY


# --- project, target and user: headers and body aliases ---------------------------------------


@pytest.mark.parametrize("api", sorted(APIS))
def test_the_project_comes_from_the_header_or_the_body_and_the_header_wins(governed, mock,
                                                                           api):
    suffix, body, _, _ = APIS[api]
    key = governed.unbound_key
    by_header = post(governed, "/policy" + suffix, body, key,
                     {"X-Policy-Project": "proj_support"})
    by_body = post(governed, "/policy" + suffix, {**body, "policy_project_id": "proj_pii"},
                   key)
    both = post(governed, "/policy" + suffix, {**body, "policy_project_id": "proj_pii"},
                key, {"X-Policy-Project": "proj_support"})
    assert [r.status_code for r in (by_header, by_body, both)] == [200, 200, 200]
    assert [r.json()["policy"]["project_id"] for r in (by_header, by_body, both)] == [
        "proj_support", "proj_pii", "proj_support"]
    assert [r.json()["policy"]["policy_id"] for r in (by_header, by_body, both)] == [
        "support_bot", "pii_redaction", "support_bot"]
    assert all("policy_project_id" not in r.json for r in mock.requests)


@pytest.mark.parametrize("api", sorted(APIS))
def test_the_target_defaults_to_the_surface_and_comes_from_the_header_or_the_body(
        governed, mock, api):
    suffix, body, surface, _ = APIS[api]
    default = post(governed, "/policy/v1" + suffix, body)
    by_header = post(governed, "/policy/v1" + suffix, body,
                     headers={"X-Policy-Target": "mobile-app"})
    by_body = post(governed, "/policy/v1" + suffix, {**body, "policy_target": "web"})
    both = post(governed, "/policy/v1" + suffix, {**body, "policy_target": "web"},
                headers={"X-Policy-Target": "mobile-app"})
    targets = [r.json()["policy"]["policy_target"] for r in (default, by_header, by_body, both)]
    assert targets == [surface, "mobile-app", "web", "mobile-app"]
    assert event_for(governed, surface=surface, policy_target="web")["project_id"] == (
        "proj_support")


@pytest.mark.parametrize("api", sorted(APIS))
def test_the_policy_user_comes_from_the_header_or_either_body_alias(governed, mock, api):
    suffix, body, _, _ = APIS[api]
    key = governed.keys["proj_support"]
    cases = [
        ({}, {}, None, f"key:{key_id(governed, key)}"),
        ({"X-Policy-User": f"h-{api}"}, {}, f"h-{api}", f"h-{api}"),
        ({}, {"policy_user": f"u-{api}"}, f"u-{api}", f"u-{api}"),
        ({}, {"policy_user_id": f"id-{api}"}, f"id-{api}", f"id-{api}"),
        ({}, {"policy_user": f"u2-{api}", "policy_user_id": f"id2-{api}"}, f"u2-{api}",
         f"u2-{api}"),
        ({"X-Policy-User": f"h3-{api}"}, {"policy_user": "b", "policy_user_id": "c"},
         f"h3-{api}", f"h3-{api}"),
    ]
    for headers, extra, user, subject in cases:
        response = post(governed, "/policy" + suffix, {**body, **extra}, key, headers)
        assert response.status_code == 200, response.text
        assert response.json()["policy"]["policy_user"] == user
        event = governed.events()[-1]
        assert (event["event_type"], event["policy_user"], event["quota_subject"],
                event["user_id"]) == ("enforcement", user, subject,
                                      f"key:{key_id(governed, key)}")


def test_a_utf8_header_label_equals_the_same_label_in_the_body(governed, mock):
    suffix, body, _, _ = APIS["chat"]
    label = "mobile-äpp-東京"
    by_header = httpx2.post(governed.url + "/policy" + suffix, json=body, timeout=TIMEOUT,
                           headers=[(b"authorization",
                                     f"Bearer {governed.keys['proj_support']}".encode()),
                                    (b"x-policy-target", label.encode())])
    by_body = post(governed, "/policy" + suffix, {**body, "policy_target": label})
    assert by_header.status_code == by_body.status_code == 200, by_header.text
    assert by_header.json()["policy"]["policy_target"] == label
    assert by_body.json()["policy"]["policy_target"] == label


# --- what the upstream receives -----------------------------------------------------------------


@pytest.mark.parametrize("api", sorted(APIS))
def test_the_upstream_never_sees_a_gateway_field_or_the_clients_credentials(governed, mock,
                                                                           api):
    suffix, body, _, _ = APIS[api]
    key = governed.keys["proj_support"]
    gateway_fields = {
        "policy_project_id": "proj_support", "policy_target": "web", "policy_user": "u-1",
        "policy_user_id": "u-2", "policy_id": "support_bot", "policyId": "support_bot",
        "policy": 'policy v1 "extra" {\n  default allow\n}', "flagged_categories": ["hate"],
    }
    assert set(gateway_fields) == set(GATEWAY_BODY_FIELDS)
    for auth in ({"authorization": f"Bearer {key}"}, {"x-api-key": key}):
        response = httpx2.post(governed.url + "/policy" + suffix, timeout=TIMEOUT,
                              json={**body, **gateway_fields},
                              headers={**auth, "X-Policy-Target": "t", "X-Policy-User": "u",
                                       "X-Policy-Project": "proj_support"})
        assert response.status_code == 200, response.text
        assert response.json()["policy"]["policy_user"] == "u"
        received = mock.requests[-1]
        assert received.json == body
        assert not set(GATEWAY_BODY_FIELDS) & set(received.json)
        assert not {"x-policy-project", "x-policy-target", "x-policy-user"} & set(
            received.headers)
        assert key not in json.dumps(received.headers) and key.encode() not in received.body
        if api == "messages":
            assert received.headers["x-api-key"] == UPSTREAM_ANTHROPIC_KEY
            assert "authorization" not in received.headers
        else:
            assert received.headers["authorization"] == f"Bearer {UPSTREAM_OPENAI_KEY}"
            assert "x-api-key" not in received.headers


# --- JWT users -----------------------------------------------------------------------------------


@pytest.mark.parametrize("api", sorted(APIS))
def test_a_jwt_user_granted_by_its_token_uses_the_project(governed, mock, api):
    suffix, body, _, _ = APIS[api]
    token = governed.token(f"jwt-{api}", projects=["proj_support", "proj_pii"])
    response = post(governed, "/policy/v1" + suffix, body, token,
                    {"X-Policy-Project": "proj_support"})
    assert response.status_code == 200, response.text
    assert response.json()["policy"]["project_id"] == "proj_support"
    event = governed.events()[-1]
    assert (event["user_id"], event["quota_subject"], event["org_id"]) == (
        f"jwt-{api}", f"jwt-{api}", governed.account_id)
    named_in_body = post(governed, "/policy/v1" + suffix, {**body, "policy_project_id":
                                                           "proj_pii"}, token)
    assert named_in_body.status_code == 200, named_in_body.text
    assert named_in_body.json()["policy"]["project_id"] == "proj_pii"


def test_a_jwt_user_granted_by_the_configuration_uses_the_project(governed, mock):
    token = governed.token("granted-user")
    response = post(governed, "/policy/chat/completions", APIS["chat"][1], token,
                    {"X-Policy-Project": "proj_support", "X-Policy-User": "end-user-9"})
    assert response.status_code == 200, response.text
    assert response.json()["policy"]["policy_user"] == "end-user-9"
    event = governed.events()[-1]
    # The label is the caller's; the quota subject is the token's own (`[jwt] subject_claim`).
    assert (event["user_id"], event["quota_subject"], event["policy_user"]) == (
        "granted-user", "granted-user", "end-user-9")
    assert mock.requests[-1].headers["authorization"] == f"Bearer {UPSTREAM_OPENAI_KEY}"


def test_a_star_grant_covers_every_project_of_the_users_account(governed, mock):
    token = governed.token("star-user", projects="*")
    for project in ("proj_support", "proj_pii"):
        response = post(governed, "/policy/messages", APIS["messages"][1], token,
                        {"X-Policy-Project": project})
        assert response.status_code == 200, response.text
        assert response.json()["policy"]["project_id"] == project


def test_a_jwt_in_x_api_key_is_accepted_too(governed, mock):
    token = governed.token("x-api-key-user", projects=["proj_support"])
    response = httpx2.post(governed.url + "/policy/messages", json=APIS["messages"][1],
                          timeout=TIMEOUT, headers={"x-api-key": token,
                                                    "X-Policy-Project": "proj_support"})
    assert response.status_code == 200, response.text
    assert governed.events()[-1]["user_id"] == "x-api-key-user"


def test_a_grant_from_the_management_store_applies_and_its_revocation_too(governed, mock):
    from gateway.db import open_database
    from gateway.identity.projects import ProjectStore

    store = ProjectStore(open_database(governed.gateway.db_path))
    token = governed.token("managed-user")
    headers = {"X-Policy-Project": "proj_pii"}
    try:
        before = post(governed, "/policy/chat/completions", APIS["chat"][1], token, headers)
        assert before.status_code == 403
        assert before.json()["error"]["code"] == "project_forbidden"
        store.grant("managed-user", "proj_pii")
        granted = post(governed, "/policy/chat/completions", APIS["chat"][1], token, headers)
        assert granted.status_code == 200, granted.text
        assert granted.json()["policy"]["project_id"] == "proj_pii"
        store.revoke_grant("managed-user", "proj_pii")
        after = post(governed, "/policy/chat/completions", APIS["chat"][1], token, headers)
        assert after.status_code == 403
    finally:
        store.db.conn.close()
