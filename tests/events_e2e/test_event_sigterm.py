"""SIGTERM to a real `python -m gateway serve` process under load: every request that got a
response has its event in the database once the process has exited: the SQLite file, or the
shared PostgreSQL when `[database] url` is set.

A long batch window (`batch_seconds = 30`) keeps the events of answered requests in the writer's
hands when the signal arrives, so only the shutdown drain can store them: a process that exits
without draining fails this test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx2
import pytest
from e2e.harness import (
    UPSTREAM_ANTHROPIC_KEY,
    UPSTREAM_OPENAI_KEY,
    close_identity_store,
    identity_store,
)
from events_support import REPO_POLICIES, postgres_events, stored_events
from free_ports import free_port
from mock_upstream import MockUpstream

from gateway import Config
from gateway.identity.projects import ProjectStore

REPO = Path(__file__).resolve().parents[2]
CLIENTS = 8
SLOW = json.dumps({"mode": "slow", "delay": 0.3})


def write_config(root: Path, mock_url: str, port: int, database_url: str | None = None
                 ) -> tuple[Path, Path]:
    policies = root / "policies"
    shutil.copytree(REPO_POLICIES, policies)
    db_path = root / "gateway.db"
    config = root / "gateway.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nshutdown_grace = 3\n\n'
        f'[database]\npath = "{db_path}"\n'
        + (f'url = "{database_url}"\n' if database_url else '')
        + f'\n[policies]\ndirectory = "{policies}"\n\n'
        '[events]\nbatch_seconds = 30\nbatch_size = 100000\n\n'
        '[upstream]\nforward_headers = ["x-mock-scenario"]\n\n'
        f'[providers.openai]\nkind = "openai"\nbase_url = "{mock_url}/v1"\n'
        f'api_key = "{UPSTREAM_OPENAI_KEY}"\n\n'
        f'[providers.anthropic]\nkind = "anthropic"\nbase_url = "{mock_url}"\n'
        f'api_key = "{UPSTREAM_ANTHROPIC_KEY}"\n')
    return config, db_path


def make_key(config: Path) -> str:
    """A key bound to a new project, where the gateway of `config` reads identity (its SQLite
    file, or the PostgreSQL of `[database] url`)."""
    store = identity_store(Config.load(config))
    try:
        account = store.create_account("sigterm", "control")
        ProjectStore(store.db).create("proj_load", account_id=account.id, name="Load",
                                      policy_id="support_bot")
        return store.create_key(account.id, project_id="proj_load")[1]
    finally:
        close_identity_store(store)


def wait_until_serving(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the gateway exited at start: {log.read_text()}")
        try:
            if httpx2.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        assert time.monotonic() < deadline, "the gateway did not start in 60 s"
        time.sleep(0.1)


@pytest.mark.parametrize(("workers", "backend"),
                         [(1, "sqlite"), (2, "sqlite"), (2, "postgres")])
def test_sigterm_under_load_loses_no_event_of_an_answered_request(
        mock_upstream: MockUpstream, tmp_path: Path, workers: int, backend: str,
        request: pytest.FixtureRequest) -> None:
    port = free_port()
    database_url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    config, db_path = write_config(tmp_path, mock_upstream.url, port, database_url)
    key = make_key(config)
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--workers", str(workers), "--config",
             str(config)], cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    answered: list[tuple[str, int]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(index: int) -> None:
        with httpx2.Client(base_url=url, timeout=30) as http:
            number = 0
            while not stop.is_set():
                user = f"load-{index}-{number}"
                number += 1
                headers = {"authorization": f"Bearer {key}", "x-policy-user": user}
                if number % 3 == 0:  # some requests are still upstream when the signal comes
                    headers["x-mock-scenario"] = SLOW
                try:
                    response = http.post("/policy/chat/completions", headers=headers, json={
                        "model": "gpt-x",
                        "messages": [{"role": "user", "content": "Where is my order?"}]})
                except httpx2.HTTPError:  # refused or cut by the shutdown: no answer, no claim
                    time.sleep(0.05)
                    continue
                with lock:
                    answered.append((user, response.status_code))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    try:
        wait_until_serving(process, url, log)
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(answered) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(answered) >= 40, "the load never got going"
        process.send_signal(signal.SIGTERM)  # the server process only, as a supervisor does
        exit_code = process.wait(60)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    output = log.read_text()
    events = postgres_events(database_url) if database_url else stored_events(db_path)
    stored = Counter(e["policy_user"] for e in events
                     if e["event_type"] == "enforcement")
    missing = [(user, status) for user, status in answered if stored[user] != 1]
    assert not missing, (f"{len(missing)} of {len(answered)} answered requests have no "
                         f"single stored event, e.g. {missing[:5]}; exit {exit_code}; "
                         f"log:\n{output[-3000:]}")
    assert all(count == 1 for count in stored.values()), "an event was stored twice"
    assert "could not be written and are lost" not in output, output[-3000:]
