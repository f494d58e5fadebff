"""`/readyz` and broken policy files: only a policy that a project links to and that has no good
revision in force takes the gateway out of service. A broken file that nothing links to, or
whose last good revision serves (tests/management_e2e/test_reload.py), leaves it ready with a
`degraded` note; the details are for admins; the log says exactly what changed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import httpx2
import pytest

from gateway.db import open_database
from gateway.identity.projects import ProjectStore

from .conftest import ADMIN_TOKEN, guard_source


def _readyz(managed, admin: bool = False) -> httpx2.Response:
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"} if admin else {}
    return httpx2.get(managed.url + "/readyz", timeout=10, headers=headers)


def _until(condition: Callable[[], bool], limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def test_an_unused_broken_file_leaves_the_gateway_ready_and_its_removal_is_logged_as_such(
        managed, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="gateway.admin.reload")
    broken = managed.policies / "draft.pol"
    broken.write_text('policy v1 "draft" {\n  default alow\n}\n')
    _until(lambda: "degraded" in _readyz(managed).json())
    public = _readyz(managed)
    assert (public.status_code, public.json()) == (
        200, {"status": "ready", "degraded": ["policy_file_failing"]})
    assert str(broken) not in public.text  # paths are for admins
    detailed = _readyz(managed, admin=True).json()
    [problem] = detailed["policy_errors"]
    assert (problem["path"], problem["in_force"]) == (str(broken), None)
    assert detailed["unavailable_policies"] == [] and detailed["database"] == "ok"
    assert "gateway_degraded 1.0" in httpx2.get(managed.url + "/metrics", timeout=10).text
    assert managed.chat("a calm question").status_code == 200

    broken.unlink()
    _until(lambda: _readyz(managed).json() == {"status": "ready"})
    messages = [r.getMessage() for r in caplog.records]
    assert f"policy file {broken}, which failed its check, was removed" in messages
    assert not any("passes its check again" in m for m in messages)
    assert "gateway_degraded 0.0" in httpx2.get(managed.url + "/metrics", timeout=10).text


def test_a_linked_policy_with_no_good_revision_makes_the_gateway_not_ready(
        managed, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="gateway.admin.reload")
    ghost = managed.policies / "ghost.pol"
    ghost.write_text('policy v1 "ghost" {\n  default alow\n}\n')
    db = open_database(managed.gateway.db_path)
    try:
        ProjectStore(db).create("proj_ghost", account_id=managed.gateway.account.id,
                                name="Ghost", policy_id="ghost")
    finally:
        db.conn.close()
    expected = {"status": "not_ready", "reasons": ["linked_policy_unavailable"],
                "degraded": ["policy_file_failing"]}
    _until(lambda: _readyz(managed).json() == expected)
    assert _readyz(managed).status_code == 503
    detailed = _readyz(managed, admin=True).json()
    assert detailed["unavailable_policies"] == ["ghost"]
    assert [p["path"] for p in detailed["policy_errors"]] == [str(ghost)]

    ghost.write_text(guard_source("boo", "ghost"))
    _until(lambda: _readyz(managed).status_code == 200)
    assert _readyz(managed).json() == {"status": "ready"}
    assert (f"policy file {ghost} passes its check again: revision 1 of 'ghost' in force"
            in [r.getMessage() for r in caplog.records])


def test_a_wrong_credential_on_readyz_gets_the_public_answer(managed):
    for headers in ({"authorization": "Bearer wrong"}, {"authorization": f"Bearer {managed.key}"}):
        response = httpx2.get(managed.url + "/readyz", timeout=10, headers=headers)
        assert (response.status_code, response.json()) == (200, {"status": "ready"})


def test_a_linked_policy_without_any_file_is_a_degraded_note(managed):
    db = open_database(managed.gateway.db_path)
    try:
        ProjectStore(db).create("proj_orphan", account_id=managed.gateway.account.id,
                                name="Orphan", policy_id="never_added")
    finally:
        db.conn.close()
    _until(lambda: "degraded" in _readyz(managed).json())
    response = _readyz(managed)
    assert (response.status_code, response.json()) == (
        200, {"status": "ready", "degraded": ["linked_policy_missing"]})
    assert _readyz(managed, admin=True).json()["unavailable_policies"] == ["never_added"]
