"""The whole management API (history included) under hostile input: schemathesis in negative
mode (bodies, parameters and ids that break the schema) and a battery of hostile bodies on
every operation that takes one. Every answer is a documented client error in the API's error
shape, never a 5xx, a hang or a 404 for a path that exists."""

from __future__ import annotations

import re

import httpx2
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from .conftest import ADMIN_TOKEN, PREFIX

HEADERS = {"authorization": f"Bearer {ADMIN_TOKEN}"}
ERROR_KEYS = {"message", "type", "param", "code"}

HOSTILE_BODIES: dict[str, bytes] = {
    "deep objects": b'{"a":' * 1000 + b"1" + b"}" * 1000,
    "deep lists": b'{"source": ' + b"[" * 1000 + b"]" * 1000 + b"}",
    "invalid utf-8": b'{"name": "\xff\xfe"}',
    "not json": b'{"name": ',
    "nan": b'{"name": NaN}',
    "array": b"[1, 2, 3]",
    "string": b'"hello"',
    "null": b"null",
    "huge number": b'{"budget": ' + b"9" * 5000 + b"}",
    "unknown fields": b'{"zzz_unknown": 1, "__proto__": {"admin": true}}',
    "duplicate keys": b'{"id": "proj_x", "id": "proj_y", "account_id": 5}',
    "wrong types": b'{"id": 5, "account_id": [], "name": {}, "label": 7, "source": 9}',
    "big string": b'{"name": "' + b"x" * 2_000_000 + b'"}',
    "control chars": b'{"name": "a\\u0000\\u202e\\u2028b", "label": "\\u009b2J"}',
}


def _error_shaped(response: httpx2.Response | requests.Response) -> None:
    body = response.json()
    assert set(body) >= {"error"}, body
    assert set(body["error"]) == ERROR_KEYS, body


def _operations(document: dict) -> list[tuple[str, str, bool]]:
    """(METHOD, concrete path, takes a body) of every management operation."""
    found = []
    for path, item in document["paths"].items():
        if not path.startswith(PREFIX):
            continue
        concrete = re.sub(r"\{[^}]+\}", lambda m: {"{policy_id}": "guard",
                                                   "{project_id}": "proj_guarded"}.get(
                                                       m.group(0), "key_nope"), path)
        for method, operation in item.items():
            found.append((method.upper(), concrete, "requestBody" in operation))
    return found


def test_hostile_bodies_on_every_operation_are_client_errors(managed):
    document = httpx2.get(managed.url + "/openapi.json", timeout=10).json()
    operations = [op for op in _operations(document) if op[2]]
    assert len(operations) >= 7
    with httpx2.Client(base_url=managed.url, timeout=30, headers=HEADERS) as client:
        for method, path, _ in operations:
            for name, body in HOSTILE_BODIES.items():
                response = client.request(method, path, content=body,
                                          headers={"content-type": "application/json"})
                if path.endswith("/validate") and response.status_code == 200:
                    assert response.json()["valid"] is False, (name, response.text)
                    continue  # a policy document that fails its check: its diagnostics
                assert 400 <= response.status_code < 500, (method, path, name, response.text)
                assert response.status_code != 404 or "Unknown path" not in response.text
                _error_shaped(response)
    assert managed.chat("hello").status_code == 200  # still whole


def test_the_whole_management_api_holds_under_negative_schemathesis(managed):
    raw = httpx2.get(managed.url + "/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(raw).include(path_regex=f"^{PREFIX}/")
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {operation.path for operation in operations}
    assert f"{PREFIX}/history" in paths and f"{PREFIX}/simulate" in paths
    statuses: list[int] = []
    with requests.Session() as session:
        for operation in operations:
            @given(case=operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
            @settings(max_examples=15, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def holds(case: schemathesis.Case) -> None:
                response = case.call(base_url=managed.url, session=session, headers=HEADERS,
                                     timeout=30)
                statuses.append(response.status_code)
                case.validate_response(response, checks=[not_a_server_error])
                if response.status_code >= 400:
                    _error_shaped(response)

            holds()
    assert statuses and max(statuses) < 500
    assert 400 in statuses
    assert httpx2.get(managed.url + "/healthz", timeout=10).status_code == 200
