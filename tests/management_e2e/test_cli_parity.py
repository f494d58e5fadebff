"""`python -m gateway` offers what the management API offers (docs/management.md): the policy
commands and `simulate`, as text by default, JSON with `--json`, ids only with `-q`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gateway.admin.registry import list_revisions
from gateway.db import open_database

from .conftest import guard_source

BROKEN = 'policy v1 "guard" {\n  default alow\n}\n'


def _workspace(tmp_path: Path):
    (tmp_path / "policies").mkdir()
    config = tmp_path / "gateway.toml"
    config.write_text(f'[database]\npath = "{tmp_path / "gw.db"}"\n'
                      f'[policies]\ndirectory = "{tmp_path / "policies"}"\n')

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        return subprocess.run([sys.executable, "-m", "gateway", *args, "--config", str(config)],
                              env=env, capture_output=True, text=True, timeout=60)
    return run


def test_policy_commands_and_simulate(tmp_path):
    run = _workspace(tmp_path)
    source = tmp_path / "guard.pol"
    source.write_text(guard_source("pineapple"))
    added = run("policies", "add", str(source))
    assert added.returncode == 0 and "policy_id  guard" in added.stdout  # text by default
    account = run("accounts", "create", "acme", "--plan", "control", "-q").stdout.strip()
    assert account.startswith("acct_")
    assert run("projects", "create", "proj_a", "--account", account, "--name", "A",
               "--policy", "guard", "-q").stdout == "proj_a\n"

    refused = json.loads(run("simulate", "proj_a", "--text", "pineapple pie", "--json").stdout)
    assert (refused["policy"]["decision"], refused["policy"]["reason_code"]) == (
        "refuse", "BANNED")
    assert run("simulate", "proj_a", "--text", "apple pie", "-q").stdout == "allow\n"
    assert "effective_decision    refuse" in run("simulate", "proj_a", "--text",
                                                 "pineapple").stdout

    source.write_text(guard_source("mango"))
    assert json.loads(run("policies", "update", "guard", str(source), "--json").stdout)[
        "revision"] == 2
    shown = json.loads(run("policies", "show", "guard", "--json").stdout)
    assert shown["source"] == guard_source("mango") and shown["revision"] == 2

    broken = tmp_path / "broken.pol"
    broken.write_text(BROKEN)
    failed = run("policies", "update", "guard", str(broken))
    assert failed.returncode == 1 and "unknown decision `alow`" in failed.stderr
    invalid = run("policies", "validate", str(broken), "--json")
    assert invalid.returncode == 1
    assert json.loads(invalid.stdout)["diagnostics"][0]["line"] == 2
    assert run("policies", "validate", str(source)).returncode == 0
    assert (tmp_path / "policies" / "guard.pol").read_text() == guard_source("mango")

    deleted = json.loads(run("policies", "delete", "guard", "--json").stdout)
    assert deleted == {"policy_id": "guard", "deleted": True, "revision": 3}
    revisions = json.loads(run("policies", "revisions", "guard", "--json").stdout)
    assert [(r["revision"], r["edit_type"]) for r in revisions] == [
        (1, "create"), (2, "update"), (3, "delete")]
    assert "update" in run("policies", "revisions", "guard").stdout
    db = open_database(tmp_path / "gw.db")
    assert len(list_revisions(db, "guard")) == 3
    # Each revision and each simulation the CLI made is one stored event.
    kinds = [row[0] for row in db.execute(
        "SELECT event_type FROM policy_events ORDER BY seq").fetchall()]
    assert kinds.count("revision") == 3 and kinds.count("simulation") == 3
    missing = run("simulate", "proj_a", "--text", "x")
    assert missing.returncode == 1 and "policy_not_linked" in missing.stderr


SUMMARY_POLICY = '''policy v1 "gist" {
  name "Gist"
  default allow
  rule gist {
    when input contains "tides"
    then summary reason GIST
  }
}
'''


def test_simulate_shows_the_instruction_a_summary_adds(tmp_path):
    from dsl.instructions import DEFAULT_SUMMARY_INSTRUCTION

    run = _workspace(tmp_path)
    source = tmp_path / "gist.pol"
    source.write_text(SUMMARY_POLICY)
    assert run("policies", "add", str(source)).returncode == 0
    account = run("accounts", "create", "acme", "--plan", "control", "-q").stdout.strip()
    assert run("projects", "create", "proj_g", "--account", account, "--name", "G",
               "--policy", "gist", "-q").returncode == 0
    text = run("simulate", "proj_g", "--text", "Explain tides", "--surface", "messages").stdout
    assert f"instruction           {DEFAULT_SUMMARY_INSTRUCTION}" in text.splitlines()
    as_json = json.loads(run("simulate", "proj_g", "--text", "Explain tides", "--json").stdout)
    assert as_json["obligations"]["instruction"] == DEFAULT_SUMMARY_INSTRUCTION
    allowed = run("simulate", "proj_g", "--text", "Explain the moon").stdout
    assert "effective_decision    allow" in allowed and "instruction" not in allowed
