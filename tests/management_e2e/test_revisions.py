"""Policies as code (docs/events.md, docs/management.md): every create, update and delete that takes
effect, through the API, through a file edit or through the CLI, is one revision with one `revision`
event carrying the source snapshot; a write that fails its check is refused with its diagnostics and
changes nothing."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import time

import httpx2
import pytest

from gateway.db import open_database

from .conftest import SUPER_ADMIN_ROLE, guard_source


def _wait_for(condition, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _revision_events(managed, policy_id: str) -> list[tuple[str, int, str]]:
    return [(e["edit_type"], e["policy_revision"], e["config_snapshot"])
            for e in managed.events("revision") if e["policy_id"] == policy_id]


def test_api_create_update_delete_emit_one_revision_event_each(managed):
    first, second = guard_source("kiwi", "fruit"), guard_source("plum", "fruit")
    with managed.admin() as admin:
        created = admin.post("/policies", json={"source": first})
        assert created.status_code == 201, created.text
        assert (created.json()["policy_id"], created.json()["revision"]) == ("fruit", 1)
        assert (managed.policies / "fruit.pol").read_text() == first
        updated = admin.put("/policies/fruit", content=second,
                            headers={"content-type": "text/plain"})
        assert (updated.status_code, updated.json()["revision"]) == (200, 2)
        assert (managed.policies / "fruit.pol").read_text() == second
        deleted = admin.delete("/policies/fruit")
        assert deleted.json() == {"policy_id": "fruit", "deleted": True, "revision": 3}
        assert not (managed.policies / "fruit.pol").exists()
        assert admin.get("/policies/fruit").status_code == 404
        history = admin.get("/policies/fruit/revisions").json()["data"]
    expected = [("create", 1, first), ("update", 2, second), ("delete", 3, second)]
    assert [(r["edit_type"], r["revision"], r["source"]) for r in history] == expected
    time.sleep(0.6)  # the watcher sees the files the API wrote: nothing new to record
    assert _revision_events(managed, "fruit") == expected
    event = next(e for e in managed.events("revision") if e["policy_id"] == "fruit")
    assert (event["source"], event["policy_name"], event["data_classification"]) == (
        "policy_gateway", "Guard", "internal")


def test_file_edits_emit_revision_events(managed):
    path = managed.policies / "berry.pol"
    first, second = guard_source("kiwi", "berry"), guard_source("plum", "berry")
    path.write_text(first)
    _wait_for(lambda: len(_revision_events(managed, "berry")) == 1)
    path.write_text(second)
    _wait_for(lambda: len(_revision_events(managed, "berry")) == 2)
    path.unlink()
    _wait_for(lambda: len(_revision_events(managed, "berry")) == 3)
    assert _revision_events(managed, "berry") == [
        ("create", 1, first), ("update", 2, second), ("delete", 3, second)]


def test_a_file_deleted_right_after_a_reload_loaded_it_is_still_deleted(managed):
    # The watcher records what it has seen of the directory. Recorded after the load, a file
    # removed between the load and the record counted as seen, and stayed in force for good.
    reloader = managed.gateway.app.extensions["gateway"].reloader
    path = managed.policies / "berry.pol"
    first, second = guard_source("kiwi", "berry"), guard_source("plum", "berry")
    path.write_text(first)
    _wait_for(lambda: len(_revision_events(managed, "berry")) == 1)
    load = reloader._load

    def load_then_delete():
        registry = load()
        reloader._load = load  # once
        path.unlink()  # the edit that races the reload
        return registry

    reloader._load = load_then_delete
    path.write_text(second)
    _wait_for(lambda: len(_revision_events(managed, "berry")) == 3)
    assert _revision_events(managed, "berry") == [
        ("create", 1, first), ("update", 2, second), ("delete", 3, second)]


def _cli(managed, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_DATABASE"] = str(managed.gateway.db_path)
    env["GATEWAY_POLICIES"] = str(managed.policies)
    return subprocess.run([sys.executable, "-m", "gateway", *args, "--json"], env=env,
                          capture_output=True, text=True, timeout=60)


def _stored_revision_events(managed, policy_id: str) -> list[tuple[str, int]]:
    db = open_database(managed.gateway.db_path)
    try:
        rows = db.execute("SELECT edit_type, policy_revision FROM policy_events WHERE "
                          "event_type = 'revision' AND policy_id = ? ORDER BY policy_revision",
                          [policy_id]).fetchall()
    finally:
        db.conn.close()
    return [tuple(row) for row in rows]


def test_cli_writes_to_a_running_gateway_emit_each_revision_event_once(managed, tmp_path):
    upload = tmp_path / "cherry.pol"
    upload.write_text(guard_source("kiwi", "cherry"))
    assert _cli(managed, "policies", "add", str(upload)).returncode == 0
    _wait_for(lambda: _refusal_of(managed, "kiwi") == "cherry")
    upload.write_text(guard_source("plum", "cherry"))
    updated = _cli(managed, "policies", "update", "cherry", str(upload))
    assert json.loads(updated.stdout)["revision"] == 2, updated.stderr
    assert _cli(managed, "policies", "delete", "cherry").returncode == 0
    time.sleep(0.6)  # the gateway reloads, finds the revisions recorded, emits nothing again
    assert _revision_events(managed, "cherry") == []
    _wait_for(lambda: managed.state.event_writer.held == 0)
    assert _stored_revision_events(managed, "cherry") == [
        ("create", 1), ("update", 2), ("delete", 3)]


def _refusal_of(managed, word: str) -> str | None:
    """The policy that refused a project request naming `word`, linking it first."""
    with managed.admin() as admin:
        admin.patch(f"/projects/{managed.project_id}", json={"policy_id": "cherry"})
    response = managed.chat(f"about {word}")
    return response.json()["policy"]["policy_id"] if response.status_code == 403 else None


BROKEN_SOURCES = [
    pytest.param({"source": 'policy v1 "guard" {\n  default alow\n}\n'}, "alow", id="bad-pol"),
    pytest.param({"name": "guard", "config": {"rules": {"denylist": "not a list"}}},
                 "denylist", id="bad-json-document"),
]


@pytest.mark.parametrize("body, culprit", BROKEN_SOURCES)
@pytest.mark.parametrize("method, path", [("POST", "/policies"), ("PUT", "/policies/guard")])
def test_a_write_that_fails_its_check_is_refused_with_diagnostics(managed, body, culprit,
                                                                   method, path):
    before = (managed.policies / "guard.pol").read_text()
    with managed.admin() as admin:
        response = admin.request(method, path, json=body)
        validated = admin.post("/policies/validate", json=body).json()
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["error"]["code"] == "invalid_policy"
    assert error["diagnostics"], error
    assert any(culprit in d["message"] for d in error["diagnostics"])
    for diagnostic in error["diagnostics"]:  # `python -m dsl check --format json`
        assert set(diagnostic) == {"file", "line", "column", "severity", "message", "hint"}
    assert validated["valid"] is False
    assert [d["message"] for d in validated["diagnostics"]] == [
        d["message"] for d in error["diagnostics"]]
    assert (managed.policies / "guard.pol").read_text() == before
    assert sorted(p.name for p in managed.policies.iterdir()) == ["guard.pol"]
    assert [e["edit_type"] for e in managed.events("revision")] == ["create"]
    assert managed.chat("pineapple").status_code == 403  # the policy in force is unchanged


def test_a_write_cannot_rename_a_policy_or_take_another_ones_id(managed):
    with managed.admin() as admin:
        renamed = admin.put("/policies/guard", json={"source": guard_source("x", "other")})
        taken = admin.post("/policies", json={"source": guard_source("x", "guard")})
        unsafe = admin.post("/policies", json={"source": guard_source("x", "../escape")})
    assert (renamed.status_code, renamed.json()["error"]["code"]) == (400, "invalid_request")
    assert (taken.status_code, taken.json()["error"]["code"]) == (409, "conflict")
    assert unsafe.status_code == 400
    assert sorted(p.name for p in managed.policies.iterdir()) == ["guard.pol"]
    assert httpx2.get(managed.url + "/readyz", timeout=10).status_code == 200


def _stored_revision_authors(managed, policy_id: str) -> list[tuple[str, str | None]]:
    _wait_for(lambda: managed.state.event_writer.held == 0)
    db = open_database(managed.gateway.db_path)
    try:
        rows = db.execute("SELECT edit_type, user_id FROM policy_events WHERE "
                          "event_type = 'revision' AND policy_id = ? ORDER BY policy_revision",
                          [policy_id]).fetchall()
    finally:
        db.conn.close()
    return [tuple(row) for row in rows]


def test_api_revision_events_name_the_admin_who_made_the_change(managed):
    admin_jwt = managed.token("alice@example.com", ["admin", SUPER_ADMIN_ROLE])
    with managed.admin() as admin:
        created = admin.post("/policies", json={"source": guard_source("kiwi", "fig")})
        assert created.status_code == 201, created.text
        updated = admin.put("/policies/fig", json={"source": guard_source("plum", "fig")},
                            headers={"authorization": f"Bearer {admin_jwt}"})
        assert updated.status_code == 200, updated.text
        assert admin.delete("/policies/fig",
                            headers={"authorization": f"Bearer {admin_jwt}"}).status_code == 200
    assert _stored_revision_authors(managed, "fig") == [
        ("create", "admin"), ("update", "alice@example.com"), ("delete", "alice@example.com")]


def test_file_edits_have_no_author_and_cli_edits_name_the_os_user(managed, tmp_path):
    (managed.policies / "date.pol").write_text(guard_source("kiwi", "date"))
    _wait_for(lambda: len(_revision_events(managed, "date")) == 1)
    upload = tmp_path / "date.pol"
    upload.write_text(guard_source("plum", "date"))
    updated = _cli(managed, "policies", "update", "date", str(upload))
    assert updated.returncode == 0, updated.stderr
    assert _stored_revision_authors(managed, "date") == [
        ("create", None), ("update", f"cli:{getpass.getuser()}")]
