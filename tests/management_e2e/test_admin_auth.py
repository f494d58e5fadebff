"""Every management endpoint refuses anything but the admin credential (docs/management.md)."""

from __future__ import annotations

import httpx2
import pytest

from .conftest import ADMIN_TOKEN, PREFIX, SUPER_ADMIN_ROLE, guard_source

#: (method, path, JSON body) for every management endpoint, with valid arguments.
ENDPOINTS = [
    ("GET", "/policies", None),
    # Before the writes below that delete the project's policy and disable the project.
    ("POST", "/simulate", {"project_id": "proj_guarded", "model": "gpt-4o-mini",
                           "messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/policies", {"source": guard_source("kiwi", "other_guard")}),
    ("POST", "/policies/validate", {"source": guard_source("kiwi")}),
    ("GET", "/policies/guard", None),
    ("PUT", "/policies/guard", {"source": guard_source("mango")}),
    ("DELETE", "/policies/guard", None),
    ("GET", "/policies/guard/revisions", None),
    ("GET", "/projects", None),
    ("POST", "/projects", {"id": "proj_new", "account_id": "ACCOUNT", "name": "New"}),
    ("GET", "/projects/proj_guarded", None),
    ("GET", "/projects/proj_guarded/usage", None),
    ("GET", "/keys", None),
    ("POST", "/keys", {"project_id": "proj_guarded", "label": "x"}),
    ("POST", "/keys/KEY/revoke", None),
    ("PATCH", "/projects/proj_guarded", {"status": "disabled"}),
]


def _request(managed, method, path, body, headers):
    path = path.replace("KEY", managed.gateway.key_record.id)
    if body is not None and body.get("account_id") == "ACCOUNT":
        body = {**body, "account_id": managed.gateway.account.id}
    return httpx2.request(method, managed.url + PREFIX + path, json=body, headers=headers,
                         timeout=10)


def test_every_endpoint_refuses_non_admin_credentials_and_changes_nothing(managed):
    credentials = {
        "none": ({}, 401, "invalid_token"),
        "wrong token": ({"authorization": "Bearer not-the-admin-token"}, 401,
                        "invalid_api_key"),
        "api key": ({"authorization": f"Bearer {managed.key}"}, 403, "admin_required"),
        "x-api-key": ({"x-api-key": managed.key}, 403, "admin_required"),
        "non-admin jwt": ({"authorization": f"Bearer {managed.token('u1', ['viewer'])}"}, 403,
                          "admin_required"),
        "forged jwt": ({"authorization": "Bearer " + managed.token("u1", ["admin"])[:-4] + "AAAA"},
                       401, "invalid_token"),
        "basic auth": ({"authorization": "Basic " + ADMIN_TOKEN}, 401, "invalid_token"),
    }
    files_before = sorted(p.name for p in managed.policies.iterdir())
    for method, path, body in ENDPOINTS:
        for name, (headers, status, code) in credentials.items():
            response = _request(managed, method, path, body, headers)
            assert (response.status_code, response.json()["error"]["code"]) == (status, code), \
                (method, path, name, response.text)
    assert sorted(p.name for p in managed.policies.iterdir()) == files_before
    # The key refused above as a credential was never revoked, nor the project disabled.
    assert managed.chat("hello").status_code == 200


@pytest.mark.parametrize("credential", ["token", "jwt"])
def test_every_endpoint_accepts_the_admin_token_and_an_admin_jwt(managed, credential):
    # Policies are shared by every account: writing them needs an admin of every account.
    secret = ADMIN_TOKEN if credential == "token" else managed.token(
        "boss", ["admin", SUPER_ADMIN_ROLE])
    for method, path, body in ENDPOINTS:
        response = _request(managed, method, path, body, {"authorization": f"Bearer {secret}"})
        assert response.status_code in (200, 201), (method, path, response.text)
