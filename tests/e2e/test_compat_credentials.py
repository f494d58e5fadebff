"""Credentials on /v1 (docs/security.md): the client's gateway key authenticates the client and is
never forwarded; the upstream gets the provider key the provider's own way; transport headers stay
on their hop."""

from __future__ import annotations

import anthropic
import httpx2
import openai
import pytest
from e2e.harness import UPSTREAM_ANTHROPIC_KEY, UPSTREAM_OPENAI_KEY, RunningGateway
from e2e.support import (
    CHAT_MESSAGES,
    CHAT_PATH,
    COUNT_TOKENS_PATH,
    MESSAGES_PATH,
    RESPONSES_PATH,
    SDK_TIMEOUT,
    VALID_BODIES,
    anthropic_client,
    error_of,
    openai_client,
    scenario,
)
from mock_upstream import MockUpstream, RecordedRequest

from gateway.upstream.exchange import DEFAULT_ANTHROPIC_VERSION


def assert_no_gateway_key(request: RecordedRequest, gateway_key: str) -> None:
    """The client's gateway credential appears nowhere in what the upstream received."""
    for name, value in request.headers.items():
        assert gateway_key not in value, f"gateway key leaked upstream in header {name!r}"
    assert gateway_key.encode() not in request.body


def test_openai_upstream_gets_the_provider_bearer_never_the_gateway_key(
        gateway: RunningGateway, mock: MockUpstream) -> None:
    with openai_client(gateway) as client:
        client.chat.completions.create(model="gpt-x", messages=CHAT_MESSAGES)
        client.responses.create(model="gpt-x", input="hi")
        client.models.list()
    assert len(mock.requests) == 3
    for request in mock.requests:
        assert request.headers["authorization"] == f"Bearer {UPSTREAM_OPENAI_KEY}"
        assert "x-api-key" not in request.headers
        assert_no_gateway_key(request, gateway.key)


def test_anthropic_upstream_gets_x_api_key_and_the_clients_version_and_beta(
        gateway: RunningGateway, mock: MockUpstream) -> None:
    versions = {"anthropic-version": "2023-06-01",
                "anthropic-beta": "prompt-caching-2024-07-31,token-counting-2024-11-01"}
    with anthropic_client(gateway) as client:
        client.messages.create(model="claude-x", max_tokens=8, messages=CHAT_MESSAGES,
                               extra_headers=versions)
        client.messages.count_tokens(model="claude-x", messages=CHAT_MESSAGES,
                                     extra_headers=versions)
    assert [r.path for r in mock.requests] == [MESSAGES_PATH, COUNT_TOKENS_PATH]
    for request in mock.requests:
        assert request.headers["x-api-key"] == UPSTREAM_ANTHROPIC_KEY
        assert "authorization" not in request.headers
        assert {k: request.headers.get(k) for k in versions} == versions
        assert_no_gateway_key(request, gateway.key)


def test_anthropic_version_defaults_when_the_client_sends_none(
        gateway: RunningGateway, mock: MockUpstream) -> None:
    response = httpx2.post(gateway.url + MESSAGES_PATH, json=VALID_BODIES[MESSAGES_PATH],
                          headers={"x-api-key": gateway.key}, timeout=SDK_TIMEOUT)
    assert response.status_code == 200, response.text
    [request] = mock.requests
    assert request.headers["anthropic-version"] == DEFAULT_ANTHROPIC_VERSION
    assert request.headers["x-api-key"] == UPSTREAM_ANTHROPIC_KEY


@pytest.mark.parametrize("path", [CHAT_PATH, RESPONSES_PATH, MESSAGES_PATH, COUNT_TOKENS_PATH])
@pytest.mark.parametrize("style", ["bearer", "x-api-key"])
def test_either_credential_header_works_on_every_api(
        gateway: RunningGateway, mock: MockUpstream, path: str, style: str) -> None:
    auth = ({"authorization": f"Bearer {gateway.key}"} if style == "bearer"
            else {"x-api-key": gateway.key})
    response = httpx2.post(gateway.url + path, json=VALID_BODIES[path], headers=auth,
                          timeout=SDK_TIMEOUT)
    assert response.status_code == 200, response.text
    [request] = mock.requests
    assert request.path == path
    assert_no_gateway_key(request, gateway.key)
    if path.startswith("/v1/messages"):
        assert request.headers["x-api-key"] == UPSTREAM_ANTHROPIC_KEY
        assert "authorization" not in request.headers
    else:
        assert request.headers["authorization"] == f"Bearer {UPSTREAM_OPENAI_KEY}"
        assert "x-api-key" not in request.headers


def test_hop_by_hop_headers_stay_on_their_hop(gateway: RunningGateway,
                                              mock: MockUpstream) -> None:
    request_hop = {
        "connection": "keep-alive, x-hop-secret",  # names a header as hop-by-hop (RFC 9110 7.6.1)
        "x-hop-secret": "for the gateway only",
        "keep-alive": "timeout=5",
        "proxy-authorization": "Basic cHJveHk6c2VjcmV0",
        "proxy-connection": "keep-alive",
        "te": "trailers",
        "trailer": "x-checksum",
        "cookie": "session=abc",
    }
    response_hop = {"keep-alive": "timeout=99", "proxy-authenticate": "Basic realm=x",
                    "trailer": "x-checksum", "connection": "x-upstream-hop",
                    "x-upstream-hop": "for the gateway only", "x-upstream-custom": "kept"}
    response = httpx2.post(
        gateway.url + CHAT_PATH, json=VALID_BODIES[CHAT_PATH],
        headers={"authorization": f"Bearer {gateway.key}", "openai-beta": "kept",
                 **request_hop, **scenario(headers=response_hop)},
        timeout=SDK_TIMEOUT)
    assert response.status_code == 200, response.text
    [request] = mock.requests
    assert request.headers["openai-beta"] == "kept"  # an end-to-end header of the API
    # httpx2 may open its own keep-alive connection to the upstream; the client's value must not
    # be what travels.
    assert request.headers.get("connection", "") in ("", "keep-alive")
    leaked = {name for name in request_hop if name != "connection" and name in request.headers}
    assert leaked == set()
    assert response.headers["x-upstream-custom"] == "kept"
    relayed = {name for name in response_hop if name != "connection" and name in response.headers}
    assert relayed == {"x-upstream-custom"}


@pytest.mark.parametrize("path", [CHAT_PATH, RESPONSES_PATH, MESSAGES_PATH, COUNT_TOKENS_PATH])
@pytest.mark.parametrize("credential", [
    {}, {"authorization": "Bearer ak_unknown_key_0000000000000000000000000"},
    {"x-api-key": "ak_unknown_key_0000000000000000000000000"}, {"authorization": "Basic eDp5"},
    {"authorization": "Bearer"},
], ids=["missing", "unknown-bearer", "unknown-x-api-key", "basic-scheme", "empty-bearer"])
def test_missing_or_unknown_key_is_401_invalid_api_key(
        gateway: RunningGateway, mock: MockUpstream, path: str, credential: dict[str, str]
) -> None:
    response = httpx2.post(gateway.url + path, json=VALID_BODIES[path], headers=credential,
                          timeout=SDK_TIMEOUT)
    assert response.status_code == 401
    error = error_of(path, response.json())
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "authentication_error"
    assert mock.requests == []


def test_models_needs_a_key_too(gateway: RunningGateway, mock: MockUpstream) -> None:
    response = httpx2.get(gateway.url + "/v1/models", timeout=SDK_TIMEOUT)
    assert response.status_code == 401
    assert error_of(CHAT_PATH, response.json())["code"] == "invalid_api_key"
    assert mock.requests == []


def test_sdks_raise_authentication_error_for_an_unknown_key(gateway: RunningGateway,
                                                            mock: MockUpstream) -> None:
    unknown = "ak_" + "z" * 43
    with openai_client(gateway, key=unknown) as client, \
            pytest.raises(openai.AuthenticationError) as openai_error:
        client.chat.completions.create(model="gpt-x", messages=CHAT_MESSAGES)
    assert openai_error.value.code == "invalid_api_key"
    with anthropic_client(gateway, key=unknown) as claude, \
            pytest.raises(anthropic.AuthenticationError) as anthropic_error:
        claude.messages.create(model="claude-x", max_tokens=8, messages=CHAT_MESSAGES)
    assert isinstance(anthropic_error.value.body, dict)
    assert anthropic_error.value.body["error"]["code"] == "invalid_api_key"
    assert mock.requests == []


def test_revoked_key_fails_on_the_very_next_request(gateway: RunningGateway,
                                                    mock: MockUpstream) -> None:
    record, key = gateway.new_key(label="to-revoke")
    with openai_client(gateway, key=key) as client, anthropic_client(gateway, key=key) as claude:
        assert client.chat.completions.create(model="gpt-x", messages=CHAT_MESSAGES).choices
        gateway.store.revoke_key(record.id)
        with pytest.raises(openai.AuthenticationError) as openai_error:
            client.chat.completions.create(model="gpt-x", messages=CHAT_MESSAGES)
        with pytest.raises(anthropic.AuthenticationError) as anthropic_error:
            claude.messages.create(model="claude-x", max_tokens=8, messages=CHAT_MESSAGES)
    assert openai_error.value.code == "api_key_revoked"
    assert isinstance(anthropic_error.value.body, dict)
    assert anthropic_error.value.body["error"]["code"] == "api_key_revoked"
    assert len(mock.requests) == 1  # only the request made before the revocation
    # The account's other key is untouched.
    with openai_client(gateway) as client:
        assert client.models.list().data
