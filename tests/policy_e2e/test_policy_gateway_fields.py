"""Gateway fields never leave (docs/security.md): `policy`, `policy_id`, `policyId`,
`flagged_categories` and the body aliases of the gateway headers are removed before forwarding, on
`/v1` as on `/policy`; the recording mock upstream shows what arrived. A `/v1` body without them
still arrives as the exact bytes the client sent."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import openai
import pytest
from e2e.support import SDK_TIMEOUT

from gateway.policy.governance import GATEWAY_BODY_FIELDS

PROMPT = "Where is my order?"
FIELDS: dict[str, Any] = {
    "policy_project_id": "proj_support", "policy_target": "web", "policy_user": "u-1",
    "policy_user_id": "u-2", "policy_id": "support_bot", "policyId": "support_bot",
    "policy": 'policy v1 "extra" {\n  default allow\n}', "flagged_categories": ["hate"],
}
BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "gpt-x", "messages": [{"role": "user", "content": PROMPT}]},
    "/v1/messages": {"model": "claude-x", "max_tokens": 32,
                     "messages": [{"role": "user", "content": PROMPT}]},
    "/v1/responses": {"model": "gpt-x", "input": PROMPT},
}


def test_the_list_is_every_gateway_field() -> None:
    assert set(FIELDS) == set(GATEWAY_BODY_FIELDS)


@pytest.mark.parametrize("surface", ["", "/policy"])
@pytest.mark.parametrize("path", list(BODIES))
@pytest.mark.parametrize("fields", [FIELDS, {"flagged_categories": ["hate"]},
                                    {"policy": None, "policy_id": "support_bot"}],
                         ids=["all", "flagged-only", "null-policy"])
def test_no_gateway_field_reaches_the_upstream(governed: Any, mock: Any, surface: str,
                                               path: str, fields: dict[str, Any]) -> None:
    body = BODIES[path]
    response = httpx2.post(governed.url + surface + path, json={**body, **fields},
                          headers={"authorization": f"Bearer {governed.keys['proj_support']}"},
                          timeout=SDK_TIMEOUT)
    assert response.status_code == 200, response.text
    [received] = mock.requests
    assert received.json == body
    assert not set(GATEWAY_BODY_FIELDS) & set(received.json)


def test_the_sdks_extra_gateway_fields_are_not_forwarded_on_v1(governed: Any, mock: Any
                                                                ) -> None:
    key = governed.keys["proj_support"]
    extra = {"flagged_categories": ["hate"], "policy_target": "web", "policyId": "support_bot"}
    with openai.OpenAI(base_url=governed.url + "/v1", api_key=key, max_retries=0,
                       timeout=SDK_TIMEOUT) as client:
        client.chat.completions.create(model="gpt-x", extra_body=extra,
                                       messages=[{"role": "user", "content": PROMPT}])
        client.responses.create(model="gpt-x", input=PROMPT, extra_body=extra)
    with anthropic.Anthropic(base_url=governed.url, api_key=key, max_retries=0,
                             timeout=SDK_TIMEOUT) as claude:
        claude.messages.create(model="claude-x", max_tokens=16, extra_body=extra,
                               messages=[{"role": "user", "content": PROMPT}])
    assert len(mock.requests) == 3
    for received in mock.requests:
        assert not set(GATEWAY_BODY_FIELDS) & set(received.json), received.json


def test_a_v1_body_without_gateway_fields_is_forwarded_byte_for_byte(governed: Any,
                                                                      mock: Any) -> None:
    raw = b'{ "model":"gpt-x" ,"messages":[{"role":"user","content":"caf\\u00e9"}], "n":1 }'
    response = httpx2.post(governed.url + "/v1/chat/completions", content=raw,
                          headers={"authorization": f"Bearer {governed.keys['proj_support']}",
                                   "content-type": "application/json"}, timeout=SDK_TIMEOUT)
    assert response.status_code == 200
    assert mock.requests[0].body == raw
