"""No input makes the governed surface answer 500 (docs/reference.md): hypothesis-generated bodies
(random JSON values, random bytes, huge strings, deep nesting, every field of the wrong type,
gateway fields included) and X-Policy-* headers (unicode, control characters, very long values)
against the six `/policy` endpoints get an answer in the API's own success or error shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

TIMEOUT = 30.0
SUFFIXES = {"/chat/completions": "chat", "/messages": "messages", "/responses": "responses"}
PATHS = [prefix + suffix for prefix in ("/policy", "/policy/v1") for suffix in SUFFIXES]
TEXTS = ["Where is my order?", "Tell me a joke", "refund please, mail ann@example.org",
         "How do I tie a noose?", "order " + "ü" * 50]
#: The codes the gateway itself answers with (docs/reference.md).
GATEWAY_CODES = {"invalid_request", "invalid_policy", "moderation_blocked", "project_required",
                 "policy_not_linked", "invalid_api_key", "api_key_revoked", "invalid_token",
                 "policy_gateway_plan_required", "project_forbidden", "project_disabled",
                 "policy_refused", "project_not_found", "policy_id_mismatch",
                 "request_too_large", "quota_exceeded"}
#: Gateway errors raised before any policy was evaluated carry no `policy` object.
BEFORE_EVALUATION = {"invalid_request", "invalid_policy", "project_required",
                     "policy_not_linked", "invalid_api_key", "api_key_revoked", "invalid_token",
                     "policy_gateway_plan_required", "project_forbidden", "project_disabled",
                     "project_not_found", "policy_id_mismatch", "request_too_large"}
POLICY_FIELDS = {"policy_id", "policy_revision", "decision", "effective_decision", "enforced",
                 "rollout_mode", "reason_code", "triggered_categories", "allowlist_hits",
                 "denylist_hits", "redacted_spans", "policy_target", "policy_user",
                 "project_id", "quota", "stage"}


def api_of(path: str) -> str:
    return SUFFIXES[path.removeprefix("/policy").removeprefix("/v1")]


def valid_body(api: str, text: str) -> dict[str, Any]:
    messages = [{"role": "user", "content": text}]
    bodies: dict[str, dict[str, Any]] = {
        "chat": {"model": "gpt-x", "messages": messages},
        "messages": {"model": "claude-x", "max_tokens": 16, "messages": messages},
        "responses": {"model": "gpt-x", "input": text}}
    return bodies[api]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
huge_strings = st.integers(10_000, 400_000).map(lambda n: "order " + "x" * n)
labels = (st.text(max_size=40) | st.sampled_from(["proj_support", "proj_pii", "proj_disabled",
                                                  "proj_unlinked", "proj_other_account",
                                                  "support_bot", "hate", ""]))
SMALL_POLICY = 'policy v1 "fz" {\n  default allow\n  rule r { when input contains "joke" then refuse }\n}'
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model": st.text(max_size=12).filter(lambda m: not m.startswith("mock-")) | json_values,
    "messages": json_values | st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool"]) | st.text(max_size=5)},
        optional={"content": st.text(max_size=30) | json_values | huge_strings}), max_size=3),
    "input": st.text(max_size=30) | json_values | huge_strings,
    "max_tokens": st.integers() | json_values, "stream": st.booleans() | json_values,
    "system": st.text(max_size=10) | json_values, "tools": json_values,
    "stream_options": st.just({"include_usage": True}) | json_values,
    "policy_project_id": labels | json_values, "policy_target": labels | json_values,
    "policy_user": labels | json_values, "policy_user_id": labels | json_values,
    "policy_id": labels | json_values, "policyId": labels | json_values,
    "policy": st.just(SMALL_POLICY) | st.text(max_size=40) | json_values,
    "flagged_categories": st.lists(st.sampled_from(["hate", "sexual", "violence", "x"]),
                                   max_size=3) | json_values,
}


@st.composite
def near_valid_bodies(draw: st.DrawFn, api: str) -> bytes:
    """A valid body with some fields (API or gateway) replaced by random values or removed."""
    body = valid_body(api, draw(st.sampled_from(TEXTS)))
    for name in draw(st.sets(st.sampled_from(sorted(FIELDS)), max_size=4)):
        if draw(st.booleans()):
            body[name] = draw(FIELDS[name])
        else:
            body.pop(name, None)
    return json.dumps(body).encode()


@st.composite
def deeply_nested(draw: st.DrawFn, api: str) -> bytes:
    depth = draw(st.integers(50, 3000))
    nested = b"[" * depth + b"]" * depth
    where = draw(st.sampled_from(["body", "content", "policy", "user"]))
    if where == "body":
        return nested
    base = json.dumps(valid_body(api, "Where is my order?")).encode()[:-1]
    if where == "content":
        base = json.dumps({**valid_body(api, ""), "messages": [], "input": ""}).encode()[:-1]
        return base + b', "messages": [{"role": "user", "content": ' + nested + b"}]}"
    return base + f', "{where}": '.encode() + b'{"a": ' * min(depth, 900) + b"1" + b"}" * min(
        depth, 900) + b"}"


def bodies(api: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        json_values.map(lambda value: json.dumps(value).encode()),
        st.binary(max_size=64),
        near_valid_bodies(api), near_valid_bodies(api), near_valid_bodies(api),
        near_valid_bodies(api), near_valid_bodies(api),
        deeply_nested(api),
    )


def header_bytes(text: str) -> bytes:
    """`text` as UTF-8, reduced to what HTTP/1.1 can carry in a header value (tabs and every
    non-ASCII byte stay; CR, LF, NUL and the like cannot be sent at all)."""
    raw = bytes(b for b in text.encode() if b == 9 or 32 <= b != 127)
    return raw.strip(b" \t")


header_values = st.one_of(
    st.text(max_size=60).map(header_bytes),
    st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "So", "Lo"]),
            max_size=20).map(header_bytes),
    st.integers(200, 6000).map(lambda n: b"u" * n),
    st.sampled_from([b"proj_support", b"proj_pii", b"proj_other_account", b"proj_disabled",
                     b"a\tb", b"\xc2\x85next-line", b"\xff\xfe", "日本語".encode()]),
)
#: The gateway's own headers (never forwarded) and one an API defines, forwarded as sent.
policy_headers = st.dictionaries(
    st.sampled_from([b"x-policy-project", b"x-policy-target", b"x-policy-user",
                     b"idempotency-key"]),
    header_values, max_size=3)
#: Mostly credentials that reach evaluation, so the fuzz gets past authentication.
CREDENTIALS = ["support"] * 3 + ["pii"] * 3 + ["unbound", "jwt", "free", "none", "garbage"]
cases = st.sampled_from(PATHS).flatmap(lambda path: st.tuples(
    st.just(path), bodies(api_of(path)), policy_headers, st.sampled_from(CREDENTIALS)))


@pytest.fixture(scope="module")
def http(governed: Any) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=governed.url, timeout=TIMEOUT) as client:
        yield client


@pytest.fixture(scope="module")
def credentials(governed: Any) -> dict[str, bytes | None]:
    return {"support": governed.keys["proj_support"].encode(),
            "pii": governed.keys["proj_pii"].encode(), "unbound": governed.unbound_key.encode(),
            # Minted once for the module: valid however long a loaded machine takes to run it.
            "jwt": governed.token("granted-user", projects=["proj_pii"],
                                  expires_in=6 * 3600).encode(),
            "free": governed.free_key.encode(), "none": None, "garbage": b"ak_\xc3\xa9\t!"}


def check_error(api: str, response: httpx2.Response) -> None:
    body = response.json()
    assert isinstance(body, dict), body
    error = body["error"]
    if api == "messages":
        assert body["type"] == "error", body
        assert isinstance(error["type"], str) and error["type"] != "error", body
    assert isinstance(error["message"], str) and error["message"], body
    code = error.get("code")
    event(f"{response.status_code} {code}")
    if code in GATEWAY_CODES:
        keys = {"type", "message", "code", "details"} if api == "messages" else {
            "message", "type", "param", "code"}
        assert set(error) == keys, body
        assert ("policy" in body) == (code not in BEFORE_EVALUATION), body
    else:  # the upstream's own error, passed through with the policy object
        assert set(body["policy"]) == POLICY_FIELDS, body


def check_success(api: str, response: httpx2.Response) -> None:
    event(f"{response.status_code} success")
    if response.headers["content-type"].startswith("text/event-stream"):
        frames = [block for block in response.text.split("\n\n") if block.strip()]
        datas = [line.removeprefix("data: ") for block in frames for line in block.split("\n")
                 if line.startswith("data: ")]
        assert datas, response.text
        for data in datas:
            if data != "[DONE]":
                assert set(json.loads(data)["policy"]) == POLICY_FIELDS, data
        terminal = {"chat": "[DONE]", "messages": None, "responses": None}[api]
        if terminal is not None:
            assert datas[-1] == terminal
        else:
            assert json.loads(datas[-1])["type"] in ("message_stop", "response.completed")
        return
    body = response.json()
    kind = {"chat": ("object", "chat.completion"), "messages": ("type", "message"),
            "responses": ("object", "response")}[api]
    assert body[kind[0]] == kind[1], body
    assert set(body["policy"]) == POLICY_FIELDS, body


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases)
def test_no_input_gets_a_500_or_an_answer_out_of_shape(governed: Any, http: httpx2.Client,
                                                      credentials: dict[str, bytes | None],
                                                      case: tuple[str, bytes, dict[bytes, bytes],
                                                                  str]) -> None:
    path, raw, headers, credential = case
    sent = [(b"content-type", b"application/json"), *headers.items()]
    token = credentials[credential]
    if token is not None:
        sent.append((b"authorization", b"Bearer " + token))
    response = http.post(path, content=raw, headers=sent)
    assert response.status_code < 500, (path, raw[:300], headers, response.text)
    api = api_of(path)
    if response.is_success:
        check_success(api, response)
    else:
        check_error(api, response)


@pytest.mark.parametrize("path", PATHS)
def test_header_labels_in_any_script_round_trip_into_the_policy_object(governed: Any,
                                                                      http: httpx2.Client,
                                                                      path: str) -> None:
    """The control for the fuzz: valid unicode labels are not merely tolerated but kept."""
    api = api_of(path)
    target, user = "ünïcödé-目標-🎯", "пользователь\u00a01"
    response = http.post(path, json=valid_body(api, "Where is my order?"), headers=[
        (b"authorization", f"Bearer {governed.keys['proj_support']}".encode()),
        (b"x-policy-target", target.encode()), (b"x-policy-user", user.encode())])
    assert response.status_code == 200, response.text
    policy = response.json()["policy"]
    assert (policy["policy_target"], policy["policy_user"]) == (target, user)


@pytest.mark.parametrize("path", ["/policy/chat/completions", "/v1/chat/completions"])
def test_a_non_ascii_forwarded_header_is_relayed_as_sent(governed: Any, http: httpx2.Client,
                                                         mock: Any, path: str) -> None:
    response = http.post(path, json=valid_body("chat", "Where is my order?"), headers=[
        (b"authorization", f"Bearer {governed.keys['proj_support']}".encode()),
        (b"idempotency-key", "café".encode())])
    assert response.status_code == 200, response.text
    assert mock.requests[-1].headers["idempotency-key"].encode("latin-1") == "café".encode()


@st.composite
def simulation_bodies(draw: st.DrawFn) -> bytes:
    surface = draw(st.sampled_from(["chat.completions", "messages", "responses"]))
    raw = draw(near_valid_bodies({"chat.completions": "chat"}.get(surface, surface)))
    body = json.loads(raw)
    body["surface"] = draw(st.just(surface) | json_values)
    return json.dumps(body).encode()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=simulation_bodies() | st.binary(max_size=64), headers=policy_headers)
def test_no_simulation_input_gets_a_500(governed: Any, http: httpx2.Client, raw: bytes,
                                        headers: dict[bytes, bytes]) -> None:
    response = http.post("/policy/simulate", content=raw, headers=[
        (b"authorization", f"Bearer {governed.keys['proj_support']}".encode()),
        *headers.items()])
    assert response.status_code < 500, (raw[:300], headers, response.text)
    body = response.json()
    if response.is_success:
        assert body["object"] == "policy.simulation" and set(body["policy"]) == POLICY_FIELDS
    else:
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        assert body["error"]["code"] in GATEWAY_CODES, body
