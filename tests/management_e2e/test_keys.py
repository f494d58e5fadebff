"""Keys through the management API and the CLI (docs/management.md): the plaintext is shown once,
lists show previews only, and a revoked key fails on its very next request, whichever process
revoked it (the gateway's identity cache follows SQLite's data_version)."""

from __future__ import annotations

import os
import subprocess
import sys


def _revoked(response) -> bool:
    return (response.status_code, response.json()["error"]["code"]) == (401, "api_key_revoked")


def test_a_key_revoked_over_http_fails_on_its_next_request(managed):
    with managed.admin() as admin:
        created = admin.post("/keys", json={"project_id": managed.project_id, "label": "ci"})
        assert created.status_code == 201
        key = created.json()["key"]
        assert key.startswith("ak_") and len(key) >= 35
        listed = admin.get("/keys", params={"project_id": managed.project_id}).json()["data"]
        assert key not in str(listed)
        mine = next(k for k in listed if k["id"] == created.json()["id"])
        assert mine["key_preview"] == f"{key[:6]}...{key[-4:]}"
        assert managed.chat("hello", key=key).status_code == 200
        revoked = admin.post(f"/keys/{mine['id']}/revoke")
        assert revoked.json()["revoked"] is True
    assert _revoked(managed.chat("hello", key=key))
    assert managed.chat("hello").status_code == 200  # the other key of the project still works


def test_a_key_revoked_from_the_cli_fails_on_its_next_request(managed):
    key_record, key = managed.gateway.store.create_key(
        managed.gateway.account.id, project_id=managed.project_id, label="cli")
    assert managed.chat("hello", key=key).status_code == 200  # cached by the gateway now
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_DATABASE"] = str(managed.gateway.db_path)
    done = subprocess.run([sys.executable, "-m", "gateway", "keys", "revoke", key_record.id],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert _revoked(managed.chat("hello", key=key))
