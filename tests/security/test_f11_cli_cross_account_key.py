"""`gateway keys create --account A --project <B's project>` bound a key to
another account's project, which the API refuses. Now the store refuses it for both."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gateway.db import open_database
from gateway.identity.keys import IdentityStore

REPO = Path(__file__).resolve().parents[2]


def _count_keys(secure) -> int:
    db = open_database(secure.gateway.db_path)
    try:
        return len(IdentityStore(db).list_keys())
    finally:
        db.conn.close()


def test_the_cli_refuses_a_key_for_another_accounts_project(secure, tmp_path):
    config = tmp_path / "cli.toml"
    config.write_text(f'[database]\npath = "{secure.gateway.db_path}"\n\n'
                      f'[policies]\ndirectory = "{secure.policies}"\n')
    before = _count_keys(secure)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "create", "--account", secure.account_a,
         "--project", secure.project_b, "--config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode != 0
    assert f"project '{secure.project_b}' does not exist in account" in result.stderr
    assert _count_keys(secure) == before
    with secure.admin() as admin:  # the API says the same
        refused = admin.post("/keys", json={"account_id": secure.account_a,
                                            "project_id": secure.project_b})
    assert refused.status_code == 400 and "belongs to another account" in refused.text
