"""Real `python -m gateway serve` subprocesses for the operations tests.

`start_server(root, mock_url, workers=..., grace=...)` writes a configuration (providers at the
shared mock upstream, a policies directory with `ops_open`), creates a `control` account and a
project `proj_ops` governed by `ops_open` with one key bound to it, starts the server on a free
port in its own session (so SIGTERM can go to the whole process group, as systemd sends it) and
waits for `/healthz`. Its stderr (the JSON log lines) goes to `root/gateway.log`.
"""

from __future__ import annotations

import json
import os
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

from gateway.db import open_database
from gateway.identity.keys import IdentityStore
from gateway.identity.projects import ProjectStore

REPO = Path(__file__).parents[2]
PROJECT = "proj_ops"
#: A project whose budget allows one request a day: the second one is refused with 429.
QUOTA_PROJECT = "proj_ops_quota"
REFUSED_WORD = "forbidden-topic"
OPS_POLICY = f'''policy v1 "ops_open" {{
  name "Ops open"
  default allow
  denylist banned = ["{REFUSED_WORD}"]

  rule no_banned {{
    when last_user contains any of banned
    then refuse reason BANNED_TOPIC
  }}
}}
'''


@dataclass
class Server:
    url: str
    root: Path
    db_path: Path
    policies: Path
    key: str
    quota_key: str
    workers: int
    process: subprocess.Popen[bytes]

    @property
    def log_path(self) -> Path:
        return self.root / "gateway.log"

    def log_lines(self) -> list[str]:
        return [line for line in self.log_path.read_text().splitlines() if line.strip()]

    def headers(self, key: str | None = None, **extra: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key or self.key}", **extra}

    def events(self) -> list[dict[str, Any]]:
        with sqlite3.connect(self.db_path, timeout=30) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute("SELECT * FROM policy_events WHERE event_type = 'enforcement' "
                                "ORDER BY seq").fetchall()
        return [dict(row) for row in rows]

    def count_events(self) -> int:
        with sqlite3.connect(self.db_path, timeout=30) as conn:
            return int(conn.execute("SELECT count(*) FROM policy_events").fetchone()[0])

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM to the server's process group; its exit status."""
        os.killpg(self.process.pid, signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def start_server(root: Path, mock_url: str, *, workers: int = 1, grace: float = 20.0,
                 extra_toml: str = "") -> Server:
    root.mkdir(parents=True, exist_ok=True)
    policies = root / "policies"
    policies.mkdir()
    (policies / "ops_open.pol").write_text(OPS_POLICY)
    db_path = root / "gateway.db"
    port = free_port()
    config_path = root / "gateway.toml"
    config_path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nshutdown_grace = {grace}\n\n'
        f'[database]\npath = "{db_path}"\n\n[policies]\ndirectory = "{policies}"\n\n'
        '[upstream]\nforward_headers = ["x-mock-scenario"]\n\n'
        f'[providers.openai]\nkind = "openai"\nbase_url = "{mock_url}/v1"\n'
        f'api_key = "{UPSTREAM_OPENAI_KEY}"\n\n'
        f'[providers.anthropic]\nkind = "anthropic"\nbase_url = "{mock_url}"\n'
        f'api_key = "{UPSTREAM_ANTHROPIC_KEY}"\n' + extra_toml)
    db = open_database(db_path)
    store = IdentityStore(db)
    account = store.create_account("ops", "control")
    ProjectStore(db).create(project_id=PROJECT, account_id=account.id, name="Ops",
                            policy_id="ops_open", known_policies=frozenset({"ops_open"}))
    _, key = store.create_key(account.id, project_id=PROJECT)
    ProjectStore(db).create(project_id=QUOTA_PROJECT, account_id=account.id, name="Ops quota",
                            policy_id="ops_open", known_policies=frozenset({"ops_open"}),
                            budget={"requests": {"daily": 1}})
    _, quota_key = store.create_key(account.id, project_id=QUOTA_PROJECT)
    db.conn.close()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with (root / "gateway.log").open("wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--workers", str(workers), "--config",
             str(config_path)], cwd=REPO, env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    server = Server(url=f"http://127.0.0.1:{port}", root=root, db_path=db_path,
                    policies=policies, key=key, quota_key=quota_key, workers=workers, process=process)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited: {server.log_path.read_text()}")
        try:
            if httpx2.get(server.url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx2.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.kill()
            raise RuntimeError("gateway did not start in 60 s")
        time.sleep(0.1)
    if workers > 1:
        _wait_for_all_workers(server)
    return server


def _wait_for_all_workers(server: Server) -> None:
    """Each worker logs `Running on` once it listens; wait for all of them."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = {json.loads(line)["pid"] for line in server.log_lines()
                   if "Running on" in line}
        if len(running) >= server.workers:
            return
        time.sleep(0.1)
    raise RuntimeError("not every worker started")


@pytest.fixture
def make_server(mock_upstream: Any, tmp_path: Path) -> Iterator[Any]:
    started: list[Server] = []

    def make(**options: Any) -> Server:
        server = start_server(tmp_path / f"server{len(started)}", mock_upstream.url, **options)
        started.append(server)
        return server

    yield make
    for server in started:
        server.kill()


async def read_stream(client: httpx2.AsyncClient, url: str, body: Any, headers: dict[str, str],
                      started: Any) -> bytes:
    """A streamed answer's bytes, whole; `started` (a `trio.Semaphore`) is released once its
    first bytes came, so a test can wait until every stream is under way."""
    received = b""
    async with client.stream("POST", url, json=body, headers=headers) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_bytes():
            if not received:
                started.release()
            received += chunk
    return received
