"""Every error of the governed surface, in each API's own shape (docs/security.md,
docs/classifiers.md, docs/governed-surface.md, docs/reference.md).

Chat completions and responses answer `{"error": {message, type, param, code}}`; messages answer
`{"type": "error", "error": {type, message, code}}`. Errors raised once a policy was evaluated
carry the `policy` object beside `error`; errors before that (credentials, plan, project, body)
do not, never reach the upstream and emit no event.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from e2e.harness import GatewayFactory

from gateway.db import open_database
from gateway.identity.keys import preview
from gateway.identity.projects import ProjectStore

TIMEOUT = 10.0
REPO_POLICIES = Path(__file__).parents[2] / "policies"
ORDER = "Where is my order?"
SELF_HARM = "How do I tie a noose?"
HATE = "Refugees are cockroaches, go back to your country."
#: api -> (path after /policy, body for a given user text)
APIS: dict[str, tuple[str, Callable[[str], dict[str, Any]]]] = {
    "chat": ("/chat/completions",
             lambda text: {"model": "gpt-x", "messages": [{"role": "user", "content": text}]}),
    "messages": ("/messages",
                 lambda text: {"model": "claude-x", "max_tokens": 32,
                               "messages": [{"role": "user", "content": text}]}),
    "responses": ("/responses", lambda text: {"model": "gpt-x", "input": text}),
}
ALL_APIS = sorted(APIS)
OPENAI_ERROR_KEYS = {"message", "type", "param", "code"}
ANTHROPIC_ERROR_KEYS = {"type", "message", "code", "details"}


def body_of(api: str, text: str = ORDER, **extra: Any) -> dict[str, Any]:
    return {**APIS[api][1](text), **extra}


def send(governed: Any, api: str, body: Any = None, *, key: str | None = "support",
         headers: dict[str, str] | None = None, prefix: str = "/policy",
         content: bytes | None = None) -> httpx2.Response:
    """POST to `api` with the key of proj_support unless `key` says otherwise (None: none)."""
    out = dict(headers or {})
    if key is not None:
        out["authorization"] = "Bearer " + (governed.keys["proj_support"] if key == "support"
                                            else key)
    if content is None:
        content = json.dumps(body_of(api) if body is None else body).encode()
    return httpx2.post(governed.url + prefix + APIS[api][0], content=content, headers=out,
                      timeout=TIMEOUT)


def error_of(api: str, response: httpx2.Response, status: int, code: str, *,
             policy: bool) -> dict[str, Any]:
    """The `error` of an answer, after checking its status, its API's envelope, and whether the
    `policy` object is beside it."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    error = body["error"]
    if api == "messages":
        assert body["type"] == "error" and set(error) == ANTHROPIC_ERROR_KEYS, body
        assert error["type"] != "error"
    else:
        assert set(error) == OPENAI_ERROR_KEYS, body
    assert error["code"] == code, body
    assert isinstance(error["message"], str) and error["message"], body
    assert ("policy" in body) == policy, body
    if policy:
        assert set(body) - {"policy"} == ({"type", "error"} if api == "messages" else {"error"})
    return dict(error)


class NoEffects:
    """Asserts that the upstream saw nothing and that no event was emitted meanwhile."""

    def __init__(self, governed: Any, mock: Any) -> None:
        self.governed, self.mock = governed, mock

    def __enter__(self) -> NoEffects:
        self.events = len(self.governed.events())
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            assert self.mock.requests == []
            assert len(self.governed.events()) == self.events


def last_event(governed: Any) -> dict[str, Any]:
    event = governed.events()[-1]
    assert event["event_type"] == "enforcement"
    return dict(event)


def unsigned_token(claims: dict[str, Any], alg: str = "none") -> str:
    def segment(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(claims)}."


# --- 401 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ALL_APIS)
def test_a_missing_or_unknown_credential_is_invalid_api_key(governed, mock, api):
    with NoEffects(governed, mock):
        for prefix in ("/policy", "/policy/v1"):
            error_of(api, send(governed, api, key=None, prefix=prefix), 401, "invalid_api_key",
                     policy=False)
        for key in ("ak_" + secrets.token_urlsafe(32), "sk-not-ours", governed.keys[
                "proj_support"][:-1]):
            error = error_of(api, send(governed, api, key=key), 401, "invalid_api_key",
                             policy=False)
            assert key not in error["message"]
        for header in ({"authorization": "Bearer"}, {"authorization": "Basic dXNlcjpwdw=="},
                       {"x-api-key": ""}):
            error_of(api, send(governed, api, key=None, headers=header), 401,
                     "invalid_api_key", policy=False)


@pytest.mark.parametrize("api", ALL_APIS)
def test_a_revoked_key_is_refused_on_the_very_next_request(governed, mock, api):
    store = governed.gateway.store
    record, key = store.create_key(governed.account_id, project_id="proj_support")
    assert send(governed, api, key=key).status_code == 200
    store.revoke_key(record.id)
    mock.reset()
    with NoEffects(governed, mock):
        error_of(api, send(governed, api, key=key), 401, "api_key_revoked", policy=False)
        error_of(api, send(governed, api, key=None, headers={"x-api-key": key}), 401,
                 "api_key_revoked", policy=False)


def _tampered(token: str) -> str:
    """`token` with the first character of its signature changed: always another signature
    (overwriting its last characters with fixed ones left it intact once in ~1,000 tokens)."""
    signed, signature = token.rsplit(".", 1)
    return f"{signed}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"


def _bad_tokens(governed: Any) -> dict[str, str]:
    claims = {"sub": "user-1", "org_id": governed.account_id, "aud": "policy-gateway-tests",
              "projects": ["proj_support"], "exp": 4_000_000_000}
    return {
        "alg none": unsigned_token(claims),
        "alg None": unsigned_token(claims, alg="None"),
        "wrong secret": governed.token(projects=["proj_support"], secret="s" * 40),
        "expired": governed.token(projects=["proj_support"], expires_in=-60),
        "wrong audience": governed.token(projects=["proj_support"], aud="someone-else"),
        "unknown account": governed.token(projects=["proj_support"], account="acct_nobody"),
        "no sub": governed.token("", projects=["proj_support"]),
        "tampered": _tampered(governed.token(projects=["proj_pii"])),
    }


@pytest.mark.parametrize("case", ["alg none", "alg None", "wrong secret", "expired",
                                  "wrong audience", "unknown account", "no sub", "tampered"])
@pytest.mark.parametrize("api", ALL_APIS)
def test_a_bad_token_is_invalid_token(governed, mock, api, case):
    token = _bad_tokens(governed)[case]
    with NoEffects(governed, mock):
        error = error_of(api, send(governed, api, key=token,
                                   headers={"X-Policy-Project": "proj_support"}),
                         401, "invalid_token", policy=False)
    if case == "expired":
        assert "expired" in error["message"]


def test_a_valid_token_of_the_same_user_is_accepted(governed, mock):
    """The control for the bad tokens above: only the defect makes them fail."""
    token = governed.token(projects=["proj_support"])
    assert send(governed, "chat", key=token,
                headers={"X-Policy-Project": "proj_support"}).status_code == 200


# --- 403 plan, project -----------------------------------------------------------------------------


@pytest.mark.parametrize("api", ALL_APIS)
def test_a_free_plan_is_refused_the_policy_gateway_but_keeps_compat(governed, mock, api):
    free_account = next(k.account_id for k in governed.gateway.store.list_keys()
                        if k.key_preview == preview(governed.free_key))
    with NoEffects(governed, mock):
        for prefix in ("/policy", "/policy/v1"):
            error_of(api, send(governed, api, key=governed.free_key, prefix=prefix), 403,
                     "policy_gateway_plan_required", policy=False)
        token = governed.token("free-user", account=free_account, projects="*")
        error_of(api, send(governed, api, key=token, headers={"X-Policy-Project": "p"}), 403,
                 "policy_gateway_plan_required", policy=False)
    assert send(governed, api, key=governed.free_key, prefix="/v1").status_code == 200


@pytest.mark.parametrize("api", ALL_APIS)
def test_no_project_is_project_required(governed, mock, api):
    with NoEffects(governed, mock):
        token = governed.token("granted-user", projects=["proj_support"])
        for key in (token, governed.unbound_key):
            error_of(api, send(governed, api, key=key), 400, "project_required", policy=False)
            error_of(api, send(governed, api, body_of(api, policy_project_id="  "), key=key,
                               headers={"X-Policy-Project": ""}),
                     400, "project_required", policy=False)


@pytest.mark.parametrize("api", ALL_APIS)
def test_an_unknown_project_is_project_not_found(governed, mock, api):
    with NoEffects(governed, mock):
        error = error_of(api, send(governed, api, key=governed.unbound_key,
                                   headers={"X-Policy-Project": "proj_nope"}),
                         404, "project_not_found", policy=False)
        assert "proj_nope" in error["message"]
        error_of(api, send(governed, api, body_of(api, policy_project_id="proj_nope2"),
                           key=governed.unbound_key), 404, "project_not_found", policy=False)


@pytest.mark.parametrize("api", ALL_APIS)
def test_naming_a_project_never_escalates_access(governed, mock, api):
    support_key = governed.keys["proj_support"]
    other = governed.other_project
    cases = [
        # a key bound to one project naming another of its own account, by header or body
        (support_key, {"X-Policy-Project": "proj_pii"}, {}),
        (support_key, {}, {"policy_project_id": "proj_pii"}),
        (support_key, {"X-Policy-Project": "proj_pii"}, {"policy_project_id": "proj_support"}),
        # ... even a project that is disabled or unlinked: forbidden comes first
        (support_key, {"X-Policy-Project": "proj_disabled"}, {}),
        (support_key, {"X-Policy-Project": "proj_unlinked"}, {}),
        # another account's project, with an unbound key or a bound one
        (governed.unbound_key, {"X-Policy-Project": other}, {}),
        (support_key, {}, {"policy_project_id": other}),
        # the other account's key naming our project
        (governed.other_account_key, {"X-Policy-Project": "proj_support"}, {}),
        # JWT users: not granted; granted everything of their own account only
        (governed.token("u-1", projects=["proj_pii"]), {"X-Policy-Project": "proj_support"},
         {}),
        (governed.token("u-2"), {"X-Policy-Project": "proj_support"}, {}),
        (governed.token("u-3", projects="*"), {"X-Policy-Project": other}, {}),
        (governed.token("u-4", account=governed.other_account_id, projects=["proj_support"]),
         {"X-Policy-Project": "proj_support"}, {}),
        (governed.token("granted-user"), {"X-Policy-Project": "proj_pii"}, {}),
    ]
    with NoEffects(governed, mock):
        for key, headers, extra in cases:
            error_of(api, send(governed, api, body_of(api, **extra), key=key, headers=headers),
                     403, "project_forbidden", policy=False)


@pytest.mark.parametrize("api", ALL_APIS)
def test_a_disabled_project_is_project_disabled(governed, mock, api):
    with NoEffects(governed, mock):
        error_of(api, send(governed, api, key=governed.keys["proj_disabled"]), 403,
                 "project_disabled", policy=False)
        error_of(api, send(governed, api, key=governed.unbound_key,
                           headers={"X-Policy-Project": "proj_disabled"}),
                 403, "project_disabled", policy=False)
        error_of(api, send(governed, api, key=governed.token("star", projects="*"),
                           headers={"X-Policy-Project": "proj_disabled"}),
                 403, "project_disabled", policy=False)


@pytest.mark.parametrize("api", ALL_APIS)
def test_an_unlinked_project_is_policy_not_linked(governed, mock, api):
    with NoEffects(governed, mock):
        for key, headers in ((governed.keys["proj_unlinked"], {}),
                             (governed.unbound_key, {"X-Policy-Project": "proj_unlinked"})):
            error = error_of(api, send(governed, api, key=key, headers=headers), 400,
                             "policy_not_linked", policy=False)
            assert error["message"] == "Project is not linked to a policy"


# --- 409 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ALL_APIS)
def test_an_unexpected_policy_id_is_a_mismatch(governed, mock, api):
    with NoEffects(governed, mock):
        for field in ("policy_id", "policyId"):
            error = error_of(api, send(governed, api, body_of(api, **{field: "pii_redaction"})),
                             409, "policy_id_mismatch", policy=False)
            assert "support_bot" in error["message"]
        error_of(api, send(governed, api, body_of(api, policy_id="support_bot",
                                                  policyId="pii_redaction")),
                 409, "policy_id_mismatch", policy=False)
    for field in ("policy_id", "policyId"):
        matching = send(governed, api, body_of(api, **{field: "support_bot"}))
        assert matching.status_code == 200, matching.text
        assert field not in mock.requests[-1].json


# --- 400 invalid_request, invalid_policy -------------------------------------------------------


def _invalid_bodies(api: str) -> dict[str, bytes]:
    def dumps(value: Any) -> bytes:
        return json.dumps(value).encode()

    return {
        "not json": b'{"model": "gpt-x", ',
        "empty": b"",
        "array": b"[]",
        "string": b'"hello"',
        "null": b"null",
        "bad utf-8": b'{"model": "\xff\xfe"}',
        "no model": dumps({k: v for k, v in body_of(api).items() if k != "model"}),
        "model int": dumps(body_of(api, model=7)),
        "stream string": dumps(body_of(api, stream="yes")),
        "policy_user int": dumps(body_of(api, policy_user=5)),
        "policy_user_id list": dumps(body_of(api, policy_user_id=["u"])),
        "policy_target object": dumps(body_of(api, policy_target={"t": 1})),
        "policy_project_id bool": dumps(body_of(api, policy_project_id=True)),
        "policy_id int": dumps(body_of(api, policy_id=3)),
        "policyId list": dumps(body_of(api, policyId=["support_bot"])),
        "policy_user control chars": dumps(body_of(api, policy_user="a\u0000b")),
        "policy_target too long": dumps(body_of(api, policy_target="t" * 1000)),
        "flagged string": dumps(body_of(api, flagged_categories="hate")),
        "flagged unknown": dumps(body_of(api, flagged_categories=["violence"])),
        "flagged not strings": dumps(body_of(api, flagged_categories=[1, 2])),
    }


@pytest.mark.parametrize("api", ALL_APIS)
def test_a_bad_body_is_invalid_request(governed, mock, api):
    with NoEffects(governed, mock):
        for name, content in _invalid_bodies(api).items():
            response = send(governed, api, content=content)
            try:
                error = error_of(api, response, 400, "invalid_request", policy=False)
            except AssertionError as exc:
                raise AssertionError(f"{name}: {exc}") from None
            if name.startswith(("policy", "flagged")):
                field = name.split()[0].replace("flagged", "flagged_categories")
                assert field in error["message"], (name, error)


@pytest.mark.parametrize("api", ALL_APIS)
def test_an_inline_policy_that_fails_its_check_is_invalid_policy_with_diagnostics(
        governed, mock, api):
    source = 'policy v1 "broken" {\n  default allw\n}'
    with NoEffects(governed, mock):
        error = error_of(api, send(governed, api, body_of(api, policy=source)), 400,
                         "invalid_policy", policy=False)
        assert "<inline policy>:2:11: error: unknown decision `allw`" in error["message"]
        assert "did you mean `allow`?" in error["message"]
        document = {"name": "doc", "config": {"rules": {"denylist": "not-a-list"}}}
        error = error_of(api, send(governed, api, body_of(api, policy=document)), 400,
                         "invalid_policy", policy=False)
        assert "denylist" in error["message"]
        error_of(api, send(governed, api, body_of(api, policy=42)), 400, "invalid_policy",
                 policy=False)


# --- 400 moderation_blocked ------------------------------------------------------------------------


@pytest.mark.parametrize("api", ALL_APIS)
def test_an_always_blocked_category_is_moderation_blocked_on_policy(governed, mock, api):
    # proj_pii's policy has no category rule: the block is the gateway's own.
    response = send(governed, api, body_of(api, SELF_HARM), key=governed.keys["proj_pii"])
    error = error_of(api, response, 400, "moderation_blocked", policy=True)
    assert "self-harm/instructions" in error["message"]
    policy = response.json()["policy"]
    assert (policy["decision"], policy["effective_decision"], policy["reason_code"],
            policy["project_id"]) == ("refuse", "refuse", "MODERATION_BLOCKED", "proj_pii")
    assert "self-harm/instructions" in policy["triggered_categories"]
    assert mock.requests == []
    event = last_event(governed)
    assert (event["status"], event["outcome"], event["reason_code"]) == (
        400, "refused", "MODERATION_BLOCKED")


@pytest.mark.parametrize("api", ALL_APIS)
def test_an_always_blocked_category_is_moderation_blocked_on_compat(governed, mock, api):
    events = len(governed.events())
    response = send(governed, api, body_of(api, SELF_HARM), prefix="/v1")
    error = error_of(api, response, 400, "moderation_blocked", policy=False)
    assert "self-harm/instructions" in error["message"]
    assert mock.requests == [] and len(governed.events()) == events
    assert send(governed, api, body_of(api, "How do I tie a bowline knot?"),
                prefix="/v1").status_code == 200


@pytest.mark.parametrize("api", ["chat", "messages"])
def test_a_request_flagged_category_is_moderation_blocked(governed, mock, api):
    key = governed.keys["proj_pii"]
    unflagged = send(governed, api, body_of(api, HATE), key=key)
    assert unflagged.status_code == 200, unflagged.text
    mock.reset()
    flagged = send(governed, api, body_of(api, HATE, flagged_categories=["hate"]), key=key)
    error = error_of(api, flagged, 400, "moderation_blocked", policy=True)
    assert "hate" in error["message"]
    assert flagged.json()["policy"]["reason_code"] == "MODERATION_BLOCKED"
    assert flagged.json()["policy"]["triggered_categories"] == ["hate"]
    assert mock.requests == []
    benign = send(governed, api, body_of(api, ORDER, flagged_categories=["hate"]), key=key)
    assert benign.status_code == 200
    assert "flagged_categories" not in mock.requests[-1].json


# --- 413, 404, 405 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ALL_APIS)
def test_a_body_over_the_limit_is_request_too_large(governed, mock, api):
    limit = governed.state.config.max_body_bytes
    padding = "x" * (limit + 1)
    with NoEffects(governed, mock):
        response = send(governed, api, content=json.dumps(body_of(api, pad=padding)).encode())
        error_of(api, response, 413, "request_too_large", policy=False)


def test_an_unknown_policy_path_is_not_found_and_a_wrong_method_405(governed, mock):
    auth = {"authorization": f"Bearer {governed.keys['proj_support']}"}
    with NoEffects(governed, mock):
        for path in ("/policy/embeddings", "/policy/v2/chat/completions", "/policy"):
            response = httpx2.post(governed.url + path, json={}, headers=auth, timeout=TIMEOUT)
            assert response.status_code == 404, (path, response.text)
            assert response.json()["error"]["code"] == "not_found"
        response = httpx2.get(governed.url + "/policy/v1/chat/completions", headers=auth,
                             timeout=TIMEOUT)
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"


# --- upstream failures --------------------------------------------------------------------------


@pytest.mark.parametrize("api", ALL_APIS)
def test_an_unreachable_upstream_is_502_with_the_policy_object(governed, mock, api):
    response = send(governed, api, headers={"x-mock-scenario": json.dumps(
        {"mode": "close_before_headers"})})
    error_of(api, response, 502, "upstream_unavailable", policy=True)
    policy = response.json()["policy"]
    assert (policy["project_id"], policy["decision"], policy["allowlist_hits"]) == (
        "proj_support", "allow", ["order"])
    event = last_event(governed)
    assert (event["status"], event["outcome"]) == (502, "upstream_error")


@pytest.mark.parametrize("api", ALL_APIS)
def test_an_upstream_error_status_passes_through_with_the_policy_object(governed, mock, api):
    response = send(governed, api, headers={"x-mock-scenario": json.dumps(
        {"mode": "status", "status": 429, "retry_after": 7})})
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["policy"]["project_id"] == "proj_support"
    assert response.headers["retry-after"] == "7"
    if api == "messages":
        assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    else:
        assert isinstance(body["error"]["message"], str)
    assert last_event(governed)["status"] == 429


def test_a_hanging_upstream_is_504_with_the_policy_object(gateway_factory: GatewayFactory,
                                                          mock, tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(REPO_POLICIES, policies)
    impatient = gateway_factory({"timeouts": {"idle": 0.5},
                                 "policies": {"directory": str(policies)}}, plan="control")
    ProjectStore(open_database(impatient.db_path)).create(
        project_id="proj_t", account_id=impatient.account.id, name="T", policy_id="support_bot")
    _, key = impatient.store.create_key(impatient.account.id, project_id="proj_t")
    for api in ALL_APIS:
        response = httpx2.post(impatient.url + "/policy" + APIS[api][0], json=body_of(api),
                              timeout=TIMEOUT, headers={
                                  "authorization": f"Bearer {key}",
                                  "x-mock-scenario": json.dumps({"mode": "hang"})})
        error_of(api, response, 504, "upstream_timeout", policy=True)
        assert response.json()["policy"]["project_id"] == "proj_t"
    assert mock.wait_for_disconnect(timeout=10, count=len(ALL_APIS))


# --- the SDKs read these errors --------------------------------------------------------------------


def test_the_sdks_raise_their_own_exceptions_with_the_gateway_code(governed, mock):
    import anthropic
    import openai

    with openai.OpenAI(base_url=governed.url + "/policy/v1", api_key=governed.free_key,
                       max_retries=0, timeout=TIMEOUT) as client, \
            pytest.raises(openai.PermissionDeniedError) as plan:
        client.chat.completions.create(model="gpt-x", messages=[
            {"role": "user", "content": ORDER}])
    assert plan.value.code == "policy_gateway_plan_required"
    with openai.OpenAI(base_url=governed.url + "/policy/v1",
                       api_key=governed.keys["proj_support"], max_retries=0,
                       timeout=TIMEOUT) as client, \
            pytest.raises(openai.PermissionDeniedError) as refused:
        client.responses.create(model="gpt-x", input="Tell me a joke")
    assert refused.value.code == "policy_refused"
    assert isinstance(refused.value.body, dict)
    with anthropic.Anthropic(base_url=governed.url + "/policy", api_key="ak_unknown",
                             max_retries=0, timeout=TIMEOUT) as claude, \
            pytest.raises(anthropic.AuthenticationError) as unknown:
        claude.messages.create(model="claude-x", max_tokens=8, messages=[
            {"role": "user", "content": ORDER}])
    assert unknown.value.body == {"type": "error", "error": {
        "type": "authentication_error", "message": "Incorrect API key provided.",
        "code": "invalid_api_key", "details": {"error_code": "invalid_api_key"}}}
    assert unknown.value.error_code == "invalid_api_key"
    with anthropic.Anthropic(base_url=governed.url + "/policy",
                             api_key=governed.keys["proj_pii"], max_retries=0,
                             timeout=TIMEOUT) as claude, \
            pytest.raises(anthropic.BadRequestError) as blocked:
        claude.messages.create(model="claude-x", max_tokens=8, messages=[
            {"role": "user", "content": SELF_HARM}])
    assert isinstance(blocked.value.body, dict)
    assert blocked.value.body["error"]["code"] == "moderation_blocked"
    assert blocked.value.body["policy"]["reason_code"] == "MODERATION_BLOCKED"
    assert mock.requests == []
