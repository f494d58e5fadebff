"""A real gateway with 2 hypercorn worker processes on one SQLite file, for quota tests.

`workers` (module) runs `python -m gateway serve --workers 2` as a subprocess on a free port,
with both providers at the shared mock upstream and the policies in `policies/`. Each test makes
its own project (through the CLI, as an operator would) so that counters never mix.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from e2e.harness import UPSTREAM_ANTHROPIC_KEY, UPSTREAM_OPENAI_KEY
from free_ports import free_port
from mock_upstream import MockUpstream

HERE = Path(__file__).parent
REPO = HERE.parents[1]
_project_numbers = itertools.count(1)
CONFIGURED_PROJECT = "proj_configured_quota"


@dataclass
class Workers:
    url: str
    config_path: Path
    db_path: Path
    account_id: str
    process: subprocess.Popen[bytes]

    @property
    def quota_path(self) -> Path:
        """The quota store's own file, beside the database."""
        return self.db_path.with_name("gateway-quotas.db")

    def cli(self, *args: str) -> Any:
        done = subprocess.run([sys.executable, "-m", "gateway", *args, "--json", "--config",
                               str(self.config_path)], cwd=REPO, capture_output=True,
                              timeout=60, check=False)
        if done.returncode != 0:
            raise AssertionError(f"CLI {args} failed: {done.stderr.decode()}")
        return json.loads(done.stdout)

    def project(self, *, budget: dict[str, Any] | None = None,
                user_quota: dict[str, Any] | None = None,
                policy: str = "quota_open", project_id: str | None = None
                ) -> tuple[str, str]:
        """A new project with these quotas and a key bound to it: (project id, key)."""
        project_id = project_id or f"proj_q{next(_project_numbers)}_{os.getpid()}"
        args = ["projects", "create", project_id, "--account", self.account_id,
                "--name", project_id, "--policy", policy]
        if budget is not None:
            args += ["--budget", json.dumps(budget)]
        if user_quota is not None:
            args += ["--user-quota", json.dumps(user_quota)]
        self.cli(*args)
        key = self.cli("keys", "create", "--account", self.account_id,
                       "--project", project_id)["key"]
        return project_id, key

    def counters(self, project_id: str) -> dict[tuple[str, str, str], int]:
        """(subject kind, subject id, unit) -> used, summed over windows of the same length
        would be wrong: each test uses one window per unit."""
        with sqlite3.connect(self.quota_path, timeout=30) as conn:
            rows = conn.execute(
                "SELECT subject_kind, subject_id, unit, used FROM quota_counters "
                "WHERE project_id = ?", (project_id,)).fetchall()
        return {(kind, subject, unit): used for kind, subject, unit, used in rows}

    def open_reservations(self) -> int:
        with sqlite3.connect(self.quota_path, timeout=30) as conn:
            return int(conn.execute("SELECT count(*) FROM quota_reservations").fetchone()[0])

    def settled(self, project_id: str, timeout: float = 10.0
                ) -> dict[tuple[str, str, str], int]:
        """The counters once no reservation is open (streams settle after their last frame)."""
        deadline = time.monotonic() + timeout
        while self.open_reservations() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.open_reservations() == 0, "a reservation was never settled or released"
        return self.counters(project_id)


def _toml_providers(mock_url: str) -> str:
    return ('[upstream]\nforward_headers = ["x-mock-scenario"]\n\n'
            f'[providers.openai]\nkind = "openai"\nbase_url = "{mock_url}/v1"\n'
            f'api_key = "{UPSTREAM_OPENAI_KEY}"\n\n'
            f'[providers.anthropic]\nkind = "anthropic"\nbase_url = "{mock_url}"\n'
            f'api_key = "{UPSTREAM_ANTHROPIC_KEY}"\n')


def start_workers(root: Path, mock_url: str, port: int | None = None, *,
                  extra_config: str = "", processes: int = 2,
                  extra_policies: tuple[Path, ...] = (), account_name: str = "quota-e2e",
                  database_url: str | None = None) -> Workers:
    """A gateway serving from `root`; `extra_config` is TOML added to its configuration (it
    may set keys of `[quotas]`, which comes last but one); `database_url` is `[database] url`
    (identity, policies and events in that PostgreSQL). `account_name` differs per replica
    when replicas share their accounts (PostgreSQL)."""
    policies = root / "policies"
    policies.mkdir(parents=True)
    for path in (*(HERE / "policies").glob("*.pol"), *extra_policies):
        shutil.copy(path, policies / path.name)
    db_path = root / "gateway.db"
    config_path = root / "gateway.toml"
    port = port or free_port()
    config_path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n\n'
        f'[database]\npath = "{db_path}"\n'
        + (f'url = "{database_url}"\n' if database_url else '')
        + f'\n[policies]\ndirectory = "{policies}"\n\n'
        f'[quotas]\ndefault_output_tokens = 64\n{extra_config}\n\n'
        # A quota set in the configuration for one project (test_configured_project_quota).
        f'[quotas.projects.{CONFIGURED_PROJECT}]\nbudget = {{requests = {{daily = 2}}}}\n\n'
        + _toml_providers(mock_url))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    account = json.loads(subprocess.run(
        [sys.executable, "-m", "gateway", "accounts", "create", account_name, "--plan", "control",
         "--json", "--config", str(config_path)], cwd=REPO, capture_output=True, check=True,
        timeout=60).stdout)
    with (root / "gateway.log").open("wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--workers", str(processes), "--config",
             str(config_path)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited: {(root / 'gateway.log').read_text()}")
        try:
            if httpx2.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx2.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("gateway did not start in 60 s")
        time.sleep(0.1)
    return Workers(url=url, config_path=config_path, db_path=db_path,
                   account_id=account["id"], process=process)


def stop_workers(workers: Workers) -> None:
    # The whole session of the server we started: hypercorn's parent and its 2 workers.
    if workers.process.poll() is None:
        os.killpg(workers.process.pid, signal.SIGTERM)
        try:
            workers.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(workers.process.pid, signal.SIGKILL)
            workers.process.wait(10)


@pytest.fixture(scope="module")
def workers(mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Workers]:
    running = start_workers(tmp_path_factory.mktemp("quota"), mock_upstream.url)
    try:
        yield running
    finally:
        stop_workers(running)
