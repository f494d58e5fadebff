"""Bad input and failing upstreams on /v1 (docs/reference.md): the right status and `code`, in the
API's own error shape, and never a request to the upstream for input the gateway rejects."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from e2e.harness import GatewayFactory, RunningGateway, closed_port_url
from e2e.support import (
    CHAT_MESSAGES,
    CHAT_PATH,
    COUNT_TOKENS_PATH,
    MESSAGES_PATH,
    RESPONSES_PATH,
    SDK_TIMEOUT,
    STREAMING_PATHS,
    VALID_BODIES,
    anthropic_client,
    error_of,
    openai_client,
)
from mock_upstream import MockUpstream

NOT_AN_OBJECT = [b"{not json", b"", b"   ", b"\xff\xfe{}", b"[]", b'"x"', b"3", b"null", b"true"]


def _without(path: str, field: str) -> dict[str, Any]:
    return {k: v for k, v in VALID_BODIES[path].items() if k != field}


def _with(path: str, **fields: Any) -> dict[str, Any]:
    return {**VALID_BODIES[path], **fields}


#: (path, body, the `param` the error must name or None when there is none to name).
BAD_BODIES: list[tuple[str, bytes, str | None]] = [
    (path, raw, None) for path in VALID_BODIES for raw in NOT_AN_OBJECT
]
for _path in VALID_BODIES:
    _required = ["model", {RESPONSES_PATH: "input"}.get(_path, "messages")]
    _required += ["max_tokens"] if _path == MESSAGES_PATH else []
    _wrong: list[tuple[str, Any]] = [("model", 7), ("model", ""), ("model", None)]
    if _path == RESPONSES_PATH:
        _wrong += [("input", 3), ("input", {"role": "user"})]
    else:
        _wrong += [("messages", "hello"), ("messages", {"role": "user"}), ("messages", [3])]
    if _path != COUNT_TOKENS_PATH:
        _wrong += [("stream", "yes"), ("stream", 1)]
    if _path == MESSAGES_PATH:
        _wrong += [("max_tokens", "64"), ("max_tokens", 6.5), ("max_tokens", True)]
    BAD_BODIES += [(_path, json.dumps(_without(_path, name)).encode(), name)
                   for name in _required]
    BAD_BODIES += [(_path, json.dumps(_with(_path, **{name: value})).encode(), name)
                   for name, value in _wrong]


def _post(gateway: RunningGateway, path: str, content: bytes | Any,
          headers: dict[str, str] | None = None) -> httpx2.Response:
    return httpx2.post(gateway.url + path, content=content, timeout=SDK_TIMEOUT,
                      headers={"authorization": f"Bearer {gateway.key}",
                               "content-type": "application/json", **(headers or {})})


@pytest.mark.parametrize(("path", "raw", "param"), BAD_BODIES)
def test_bad_body_is_400_invalid_request_in_the_apis_shape(
        gateway: RunningGateway, mock: MockUpstream, path: str, raw: bytes,
        param: str | None) -> None:
    response = _post(gateway, path, raw)
    assert response.status_code == 400, response.text
    error = error_of(path, response.json())
    assert (error["code"], error["type"]) == ("invalid_request", "invalid_request_error")
    if param is not None:
        assert param in error["message"]
        if "param" in error:
            assert error["param"].startswith(param)
    assert mock.requests == []


def test_sdks_raise_bad_request_for_a_wrong_type(gateway: RunningGateway,
                                                 mock: MockUpstream) -> None:
    with openai_client(gateway) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-x", messages="hello")  # type: ignore[arg-type]
    assert (caught.value.code, caught.value.param) == ("invalid_request", "messages")
    with anthropic_client(gateway) as claude, \
            pytest.raises(anthropic.BadRequestError) as claude_caught:
        claude.messages.create(model="claude-x", max_tokens="64",  # type: ignore[call-overload]
                               messages=CHAT_MESSAGES)
    assert isinstance(claude_caught.value.body, dict)
    assert claude_caught.value.body["error"]["code"] == "invalid_request"
    assert mock.requests == []


def test_body_over_the_limit_is_413_with_or_without_content_length(
        gateway_factory: GatewayFactory, mock: MockUpstream) -> None:
    limit = 2048
    small = gateway_factory({"limits": {"max_body_bytes": limit}})

    def body_of_size(path: str, size: int) -> bytes:
        base = json.dumps({**VALID_BODIES[path], "pad": ""}).encode()  # ends with `"pad": ""}`
        return base[:-2] + b"x" * (size - len(base)) + b'"}'

    for path in VALID_BODIES:
        at_limit = body_of_size(path, limit)
        assert len(at_limit) == limit and json.loads(at_limit)
        assert _post(small, path, at_limit).status_code == 200
        over = body_of_size(path, limit + 1)

        def chunked(data: bytes = over) -> Any:
            for start in range(0, len(data), 500):
                yield data[start : start + 500]

        for content in (over, chunked()):
            response = _post(small, path, content)
            assert response.status_code == 413, (path, response.text)
            error = error_of(path, response.json())
            assert error["code"] == "request_too_large"
    assert len(mock.requests) == len(VALID_BODIES)  # only the bodies at the limit went through


def test_unreachable_upstream_is_502_upstream_unavailable(gateway_factory: GatewayFactory,
                                                          mock: MockUpstream) -> None:
    nowhere = closed_port_url()
    unreachable = gateway_factory({"providers": {
        "openai": {"base_url": nowhere + "/v1", "api_key": "sk-x"},
        "anthropic": {"base_url": nowhere, "api_key": "sk-y"},
    }})
    for path in VALID_BODIES:
        for stream in (False, True) if path in STREAMING_PATHS else (False,):
            body = {**VALID_BODIES[path], **({"stream": True} if stream else {})}
            response = _post(unreachable, path, json.dumps(body).encode())
            assert response.status_code == 502, response.text
            assert error_of(path, response.json())["code"] == "upstream_unavailable"
    models = httpx2.get(unreachable.url + "/v1/models", timeout=SDK_TIMEOUT,
                       headers={"authorization": f"Bearer {unreachable.key}"})
    assert models.status_code == 502
    assert error_of(CHAT_PATH, models.json())["code"] == "upstream_unavailable"
    with openai_client(unreachable) as client, pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="gpt-x", messages=CHAT_MESSAGES)
    assert err.value.status_code == 502 and err.value.code == "upstream_unavailable"
    assert mock.requests == []


@pytest.mark.parametrize("path", list(VALID_BODIES))
def test_upstream_closing_before_headers_is_502(gateway: RunningGateway, mock: MockUpstream,
                                                path: str) -> None:
    response = _post(gateway, path, json.dumps(VALID_BODIES[path]).encode(),
                     {"x-mock-scenario": json.dumps({"mode": "close_before_headers"})})
    assert response.status_code == 502, response.text
    assert error_of(path, response.json())["code"] == "upstream_unavailable"


@pytest.mark.parametrize("mode", ["reset_midstream", "malformed_sse"])
@pytest.mark.parametrize("path", list(VALID_BODIES))
def test_broken_json_answer_is_502(gateway: RunningGateway, mock: MockUpstream, path: str,
                                   mode: str) -> None:
    # Without `stream`, the mock cuts its JSON answer in half (reset or clean end).
    response = _post(gateway, path, json.dumps(VALID_BODIES[path]).encode(),
                     {"x-mock-scenario": json.dumps({"mode": mode})})
    assert response.status_code == 502, response.text
    assert error_of(path, response.json())["code"] == "upstream_unavailable"


def test_hanging_upstream_is_504_upstream_timeout(gateway_factory: GatewayFactory,
                                                  mock: MockUpstream) -> None:
    impatient = gateway_factory({"timeouts": {"idle": 0.5}})
    for path in VALID_BODIES:
        response = _post(impatient, path, json.dumps(VALID_BODIES[path]).encode(),
                         {"x-mock-scenario": json.dumps({"mode": "hang"})})
        assert response.status_code == 504, response.text
        assert error_of(path, response.json())["code"] == "upstream_timeout"
    # The gateway gave up on each hanging exchange and closed it.
    assert mock.wait_for_disconnect(timeout=10, count=len(VALID_BODIES))
    assert len(mock.requests) == len(VALID_BODIES)


UNKNOWN_PATHS = [
    ("POST", "/v1/embeddings", CHAT_PATH),
    ("GET", "/v1/nothing-here", CHAT_PATH),
    ("POST", "/v2/chat/completions", CHAT_PATH),
    ("POST", "/v1/chat/completions/extra", CHAT_PATH),
    ("GET", "/", CHAT_PATH),
    ("POST", "/v1/messages/batches", MESSAGES_PATH),
    ("POST", "/v1/messages/count_tokens/x", MESSAGES_PATH),
]


@pytest.mark.parametrize(("method", "path", "shape"), UNKNOWN_PATHS)
def test_unknown_path_is_404_not_found(gateway: RunningGateway, mock: MockUpstream,
                                       method: str, path: str, shape: str) -> None:
    response = httpx2.request(method, gateway.url + path, json={"model": "m"},
                             headers={"authorization": f"Bearer {gateway.key}"},
                             timeout=SDK_TIMEOUT)
    assert response.status_code == 404
    assert error_of(shape, response.json())["code"] == "not_found"
    assert mock.requests == []


@pytest.mark.parametrize(("method", "path"), [("GET", CHAT_PATH), ("PUT", MESSAGES_PATH),
                                              ("POST", "/v1/models"), ("DELETE", RESPONSES_PATH)])
def test_wrong_method_is_405_in_the_apis_shape(gateway: RunningGateway, mock: MockUpstream,
                                               method: str, path: str) -> None:
    response = httpx2.request(method, gateway.url + path,
                             headers={"authorization": f"Bearer {gateway.key}"},
                             timeout=SDK_TIMEOUT)
    assert response.status_code == 405
    assert error_of(path, response.json())["code"] == "method_not_allowed"
    assert mock.requests == []
