"""`python -m gateway projects|policies ...` run as users run it: a subprocess, JSON on stdout,
errors on stderr, exit status 1 for bad input and 2 for bad usage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.admin.registry import list_revisions
from gateway.db import open_database
from gateway.identity.projects import ProjectStore

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"
BROKEN = 'policy v1 "broken" {\n  default alow\n}\n'


@dataclass
class Workspace:
    root: Path
    config: Path
    database: Path
    policies: Path
    account_id: str

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("GATEWAY_CONFIG", "GATEWAY_DATABASE", "GATEWAY_POLICIES")}
        return subprocess.run([sys.executable, "-m", "gateway", *args, "--config", str(self.config)],
                              cwd=self.root, env=env, capture_output=True, text=True, timeout=60)

    def ok(self, *args: str):
        result = self.run(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def projects(self) -> ProjectStore:
        return ProjectStore(open_database(self.database))


def make_workspace(root: Path) -> Workspace:
    policies = root / "policies"
    policies.mkdir()
    config = root / "gateway.toml"
    database = root / "data" / "gw.db"
    config.write_text(f'[database]\npath = "{database}"\n[policies]\ndirectory = "{policies}"\n')
    workspace = Workspace(root, config, database, policies, account_id="")
    workspace.account_id = workspace.ok("accounts", "create", "acme", "--plan", "control")["id"]
    return workspace


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Workspace:
    """One workspace for the bad-input cases, which must leave it unchanged."""
    workspace = make_workspace(tmp_path_factory.mktemp("cli"))
    workspace.ok("policies", "add", str(REPO_POLICIES / "support_bot.pol"))
    workspace.ok("projects", "create", "proj_existing", "--account", workspace.account_id,
                 "--name", "Existing")
    return workspace


def test_project_lifecycle(tmp_path):
    ws = make_workspace(tmp_path)
    added = ws.ok("policies", "add", str(REPO_POLICIES / "support_bot.pol"))
    assert (added["policy_id"], added["revision"]) == ("support_bot", 1)

    created = ws.ok("projects", "create", "proj_support_bot", "--account", ws.account_id,
                    "--name", "Support bot", "--allow-inline-policy",
                    "--budget", '{"requests": {"daily": 1000}, "tokens": {"monthly": 500000}}',
                    "--user-quota", '{"requests": {"minute": 10}}')
    assert created["id"] == "proj_support_bot" and created["policy_id"] is None
    assert created["budget"] == {"requests": {"daily": 1000}, "tokens": {"monthly": 500000}}
    assert created["user_quota"] == {"requests": {"minute": 10}}
    assert created["allow_inline_policy"] is True and created["status"] == "active"
    assert ws.projects().get("proj_support_bot").as_dict() == created

    linked = ws.ok("projects", "link", "proj_support_bot", "support_bot")
    assert linked["policy_id"] == "support_bot"
    updated = ws.ok("projects", "update", "proj_support_bot", "--name", "Support v2",
                    "--status", "disabled", "--no-allow-inline-policy",
                    "--user-quota", '{"tokens": {"daily": 0}}')
    assert (updated["name"], updated["status"], updated["allow_inline_policy"]) == (
        "Support v2", "disabled", False)
    assert updated["user_quota"] == {"tokens": {"daily": 0}}
    assert updated["budget"] == created["budget"]  # untouched options stay

    granted = ws.ok("projects", "grant", "proj_support_bot", "alice")
    assert granted["user_projects"] == ["proj_support_bot"]
    shown = ws.ok("projects", "show", "proj_support_bot")
    assert shown["granted_users"] == ["alice"] and shown["policy_id"] == "support_bot"
    listed = ws.ok("projects", "list", "--account", ws.account_id)
    assert [p["id"] for p in listed] == ["proj_support_bot"]
    assert ws.ok("projects", "list", "--account", "acct_other") == []


def test_policies_add_and_list(tmp_path):
    ws = make_workspace(tmp_path)
    upload = tmp_path / "upload.pol"
    upload.write_text((REPO_POLICIES / "hard_refuse.pol").read_text())
    added = ws.ok("policies", "add", str(upload))
    assert added["path"] == str(ws.policies / "hard_refuse.pol")
    assert (ws.policies / "hard_refuse.pol").read_text() == upload.read_text()

    bad = tmp_path / "bad.pol"
    bad.write_text(BROKEN)
    failed = ws.run("policies", "add", str(bad))
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.startswith(f"{bad}:2:11: error: unknown decision `alow`")
    assert "    default alow\n" in failed.stderr and "^" in failed.stderr
    assert "help: did you mean `allow`?" in failed.stderr
    assert sorted(p.name for p in ws.policies.iterdir()) == ["hard_refuse.pol"]

    (ws.policies / "broken.pol").write_text(BROKEN)
    listing = ws.ok("policies", "list")
    assert listing["policies"] == [{
        "policy_id": "hard_refuse", "name": "Hard refusals with escalation", "revision": 1,
        "path": str(ws.policies / "hard_refuse.pol"), "sha256": added["sha256"]}]
    [error] = listing["errors"]
    assert error["path"] == str(ws.policies / "broken.pol")
    assert (error["diagnostic"]["line"], error["diagnostic"]["column"]) == (2, 11)
    assert error["diagnostic"]["severity"] == "error"

    upload.write_text(upload.read_text().replace("pipe bomb", "pipe bombs"))
    assert ws.ok("policies", "add", str(upload))["revision"] == 2
    assert [r.revision for r in list_revisions(open_database(ws.database), "hard_refuse")] == [1, 2]


@pytest.mark.parametrize("args, message", [
    (("projects", "create", "proj_new", "--account", "acct_missing", "--name", "N"),
     "unknown account 'acct_missing'"),
    (("projects", "create", "Proj New", "--account", "{account}", "--name", "N"),
     "invalid project id 'Proj New'"),
    (("projects", "create", "proj_new", "--account", "{account}", "--name", "N",
      "--budget", '{"requests": {"daily": 10'), "--budget is not valid JSON"),
    (("projects", "create", "proj_new", "--account", "{account}", "--name", "N",
      "--user-quota", '{"requests": {"daily": -1}}'), "non-negative integer"),
    (("projects", "create", "proj_new", "--account", "{account}", "--name", "N",
      "--policy", "ghost"), "unknown policy 'ghost'"),
    (("projects", "create", "proj_existing", "--account", "{account}", "--name", "N"),
     "project 'proj_existing' already exists"),
    (("projects", "link", "proj_existing", "ghost"), "unknown policy 'ghost'"),
    (("projects", "link", "proj_missing", "support_bot"), "unknown project 'proj_missing'"),
    (("projects", "update", "proj_existing", "--budget", '{"cents": {"daily": 1}}'),
     "unknown unit 'cents'"),
    (("projects", "update", "proj_existing"), "nothing to update"),
    (("projects", "show", "proj_missing"), "unknown project 'proj_missing'"),
    (("projects", "grant", "proj_missing", "alice"), "unknown project 'proj_missing'"),
    (("policies", "add", "/nonexistent/file.pol"), "cannot read policy file"),
])
def test_bad_input_exits_1_and_changes_nothing(shared, args, message):
    before = [p.as_dict() for p in shared.projects().list()]
    result = shared.run(*(a.replace("{account}", shared.account_id) for a in args))
    assert result.returncode == 1, result.stdout
    assert message in result.stderr
    assert result.stdout == ""
    assert [p.as_dict() for p in shared.projects().list()] == before
    assert sorted(p.name for p in shared.policies.iterdir()) == ["support_bot.cases.json", "support_bot.pol"]


@pytest.mark.parametrize("args", [
    ("projects", "update", "proj_existing", "--status", "paused"),
    ("projects", "create", "proj_new", "--name", "no account"),
    ("projects", "link", "proj_existing"),
])
def test_usage_errors_exit_2(shared, args):
    result = shared.run(*args)
    assert result.returncode == 2
    assert "usage:" in result.stderr and result.stdout == ""
