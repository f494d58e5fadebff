"""Management errors came back as 404: an unexpected PATCH field raised a TypeError
and a 1,000-deep JSON body hit the recursion limit, both answered `404 Unknown path`. Now a
misplaced field is a 400 naming it, too-deep JSON is a 400, and a bug is a 500 in the API's
error shape, logged with the request id."""

from __future__ import annotations

import logging

import pytest

from gateway.identity.projects import ProjectStore

DEEP = b'{"a":' * 1000 + b"1" + b"}" * 1000
DEEP_LIST = b'{"source": ' + b"[" * 1000 + b"]" * 1000 + b"}"


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("PATCH", "/projects/proj_a", {"project_id": "proj_b"}, "project_id"),
    ("PATCH", "/projects/proj_a", {"known_policies": ["x"]}, "known_policies"),
    ("PATCH", "/projects/proj_a", {"account_id": "acct_x"}, "account_id"),
    ("POST", "/projects", {"id": "proj_c", "account_id": "acct_x", "owner": "me"}, "owner"),
    ("POST", "/keys", {"project_id": "proj_a", "revoked": True}, "revoked"),
    ("POST", "/policies", {"source": "x", "policy_id": "y"}, "policy_id"),
])
def test_an_unknown_or_misplaced_field_is_a_400_naming_it(secure, method, path, body, field):
    with secure.admin() as admin:
        response = admin.request(method, path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_request", field)
    assert field in error["message"]


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/policies"), ("POST", "/policies/validate"), ("PUT", "/policies/guard"),
    ("POST", "/simulate"), ("POST", "/projects"), ("PATCH", "/projects/proj_a"),
    ("POST", "/keys"),
])
@pytest.mark.parametrize("body", [DEEP, DEEP_LIST], ids=["objects", "lists"])
def test_too_deep_json_is_a_400(secure, method, path, body):
    with secure.admin() as admin:
        response = admin.request(method, path, content=body,
                                 headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert "nested more than 64 levels" in response.json()["error"]["message"]


def test_a_bug_is_a_500_in_the_api_shape_with_the_request_id(secure, monkeypatch, caplog):
    def broken(self, account_id=None):
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(ProjectStore, "list", broken)
    with caplog.at_level(logging.ERROR, logger="gateway.admin"), secure.admin() as admin:
        response = admin.get("/projects")
    assert response.status_code == 500
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("internal_error", "server_error")
    request_id = response.headers["x-request-id"]
    assert request_id in error["message"]
    assert "a bug of ours" not in response.text  # no traceback, no internals
    assert any(request_id in r.getMessage() and r.exc_info for r in caplog.records)


def test_unknown_paths_are_still_404_and_other_statuses_keep_their_meaning(secure):
    with secure.admin() as admin:
        assert admin.get("/nothing-here").status_code == 404
        assert admin.delete("/projects").status_code == 405
