"""Client-chosen provider context: `openai-organization` and `openai-project` were
forwarded next to the gateway's own provider key, and `x-forwarded-for`, `x-policy-surface`
passed too. Now each provider API gets only the headers it defines for clients, plus the
ones `[upstream] forward_headers` adds."""

from __future__ import annotations

import httpx2
import pytest

HOSTILE = {
    "openai-organization": "org-someone-else", "openai-project": "proj_someone_else",
    "x-forwarded-for": "10.0.0.1", "x-policy-surface": "messages", "cookie": "session=1",
    "x-real-ip": "10.0.0.2", "forwarded": "for=10.0.0.3", "anthropic-organization": "x",
}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/policy/v1/chat/completions",
                                  "/v1/messages"])
def test_the_upstream_gets_only_the_apis_own_headers(secure, mock, path):
    body = {"model": "gpt-4o-mini", "max_tokens": 8,
            "messages": [{"role": "user", "content": "hello"}]}
    response = httpx2.post(secure.url + path, json=body, timeout=10, headers={
        "authorization": f"Bearer {secure.keys['a']}", **HOSTILE,
        "openai-beta": "assistants=v2", "anthropic-beta": "tools-2024",
        "idempotency-key": "idem-1"})
    assert response.status_code == 200, response.text
    [recorded] = [r for r in mock.requests if r.path.endswith(path.rsplit("/v1", 1)[-1])]
    assert set(HOSTILE) & set(recorded.headers) == set()
    assert recorded.headers["idempotency-key"] == "idem-1"
    if "messages" in path:
        assert recorded.headers["anthropic-beta"] == "tools-2024"
        assert "openai-beta" not in recorded.headers
    else:
        assert recorded.headers["openai-beta"] == "assistants=v2"
        assert "anthropic-beta" not in recorded.headers


def test_the_operator_can_forward_more_but_never_credentials(make_secure, mock):
    secure = make_secure(upstream={"forward_headers": [
        "x-mock-scenario", "x-team", "cookie", "authorization"]})
    response = secure.chat("hello", path="/v1", headers={"x-team": "blue", "cookie": "c=1"})
    assert response.status_code == 200, response.text
    [recorded] = mock.requests
    assert recorded.headers["x-team"] == "blue"
    assert "cookie" not in recorded.headers
    assert recorded.headers["authorization"].startswith("Bearer sk-upstream")
