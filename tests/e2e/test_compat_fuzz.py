"""No input makes the gateway answer 500 (docs/reference.md): random JSON values, random bytes and
random near-valid bodies posted to every /v1 endpoint get a parseable answer in the API's own
shape, over one running gateway and the mock provider."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from e2e.harness import RunningGateway
from e2e.support import (
    CHAT_PATH,
    COUNT_TOKENS_PATH,
    MESSAGES_PATH,
    RESPONSES_PATH,
    SDK_TIMEOUT,
    VALID_BODIES,
    is_anthropic_path,
    sse_events,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

PATHS = [CHAT_PATH, RESPONSES_PATH, MESSAGES_PATH, COUNT_TOKENS_PATH]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
#: Models the mock would read as a fault-mode request (`mock-hang`, ...) are kept out: the fuzz
#: is about the gateway's input handling, not the upstream's faults.
models = st.text(max_size=12).filter(lambda model: not model.startswith("mock-"))
messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system"]) | st.text(max_size=5)},
    optional={"content": st.text(max_size=30) | json_values}), max_size=3)
FIELDS = {"model": models | json_values, "messages": messages | json_values,
          "input": st.text(max_size=30) | json_values, "max_tokens": st.integers() | json_values,
          "stream": st.booleans() | json_values, "system": st.text(max_size=10) | json_values,
          "stream_options": st.just({"include_usage": True}) | json_values,
          "tools": json_values, "temperature": json_values}


@st.composite
def near_valid_bodies(draw: st.DrawFn, path: str) -> bytes:
    """A valid body with some fields replaced by random values or removed."""
    body: dict[str, Any] = dict(VALID_BODIES[path])
    for name in draw(st.sets(st.sampled_from(sorted(FIELDS)), max_size=3)):
        if draw(st.booleans()):
            body[name] = draw(FIELDS[name])
        else:
            body.pop(name, None)
    return json.dumps(body).encode()


def bodies(path: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        json_values.map(lambda value: json.dumps(value).encode()),
        st.binary(max_size=64),
        near_valid_bodies(path),
    )


requests = st.sampled_from(PATHS).flatmap(lambda path: st.tuples(st.just(path), bodies(path)))


@pytest.fixture(scope="module")
def http(gateway: RunningGateway) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=gateway.url, timeout=SDK_TIMEOUT,
                      headers={"authorization": f"Bearer {gateway.key}",
                               "content-type": "application/json"}) as client:
        yield client


def check_error_shape(path: str, body: Any) -> None:
    """The API's error envelope: the gateway's own errors and the upstream's alike."""
    assert isinstance(body, dict), body
    error = body["error"]
    if is_anthropic_path(path):
        assert body["type"] == "error"
    assert isinstance(error["type"], str) and isinstance(error["message"], str), body


def check_success_shape(path: str, response: httpx2.Response) -> None:
    if response.headers["content-type"].startswith("text/event-stream"):
        assert path != COUNT_TOKENS_PATH
        last_event, last_data = sse_events(response.content)[-1]
        terminal = {CHAT_PATH: (None, "[DONE]"), MESSAGES_PATH: ("message_stop", None),
                    RESPONSES_PATH: ("response.completed", None)}[path]
        assert last_event == terminal[0] and terminal[1] in (None, last_data)
        return
    body = response.json()
    expected = {CHAT_PATH: ("object", "chat.completion"), RESPONSES_PATH: ("object", "response"),
                MESSAGES_PATH: ("type", "message"), COUNT_TOKENS_PATH: ("type", None)}[path]
    if expected[1] is None:
        assert isinstance(body["input_tokens"], int)
    else:
        assert body[expected[0]] == expected[1]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_no_input_gets_a_500_or_an_unparseable_answer(http: httpx2.Client,
                                                      case: tuple[str, bytes]) -> None:
    path, raw = case
    response = http.post(path, content=raw)
    event(f"status {response.status_code}")
    assert response.status_code < 500, (path, raw, response.status_code, response.text)
    if response.is_success:
        check_success_shape(path, response)
    else:
        check_error_shape(path, response.json())
