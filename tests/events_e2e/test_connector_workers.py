"""Connectors under `python -m gateway serve --workers 2` (docs/events.md): every worker runs every
connector, but only the one holding the connector's lease delivers, so in a healthy run a
webhook receives each event once and the JSON-lines file holds each event once; with the
events, progress and leases in SQLite or in PostgreSQL."""

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
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx2
import pytest
from e2e.harness import UPSTREAM_ANTHROPIC_KEY, UPSTREAM_OPENAI_KEY
from events_support import REPO_POLICIES, postgres_events, stored_events
from mock_upstream import MockUpstream
from test_event_sigterm import free_port, make_key, wait_until_serving

REPO = Path(__file__).resolve().parents[2]
REQUESTS = 30


class Receiver(ThreadingHTTPServer):
    """A webhook destination that records the `event_id` of every POST it accepts."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.event_ids: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        with self.server.lock:
            self.server.event_ids.append(json.loads(body)["event_id"])
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def write_config(root: Path, mock_url: str, port: int, hook_url: str,
                 database_url: str | None = None) -> tuple[Path, Path, Path]:
    policies = root / "policies"
    shutil.copytree(REPO_POLICIES, policies)
    db_path, jsonl, config = root / "gateway.db", root / "out" / "events.jsonl", root / "g.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nshutdown_grace = 3\n\n'
        f'[database]\npath = "{db_path}"\n'
        + (f'url = "{database_url}"\n' if database_url else '')
        + f'\n[policies]\ndirectory = "{policies}"\n\n'
        '[events]\nbatch_seconds = 0.05\n\n'
        f'[[events.connectors]]\nname = "hook"\ntype = "webhook"\nurl = "{hook_url}"\n'
        'poll_seconds = 0.2\n\n'
        f'[[events.connectors]]\nname = "audit"\ntype = "jsonl"\npath = "{jsonl}"\n'
        'poll_seconds = 0.2\n\n'
        '[upstream]\nforward_headers = ["x-mock-scenario"]\n\n'
        f'[providers.openai]\nkind = "openai"\nbase_url = "{mock_url}/v1"\n'
        f'api_key = "{UPSTREAM_OPENAI_KEY}"\n\n'
        f'[providers.anthropic]\nkind = "anthropic"\nbase_url = "{mock_url}"\n'
        f'api_key = "{UPSTREAM_ANTHROPIC_KEY}"\n')
    return config, db_path, jsonl


def jsonl_event_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["event_id"] for line in path.read_text().splitlines() if line]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_workers_deliver_each_event_once_per_connector(
        mock_upstream: MockUpstream, receiver: Receiver, tmp_path: Path, backend: str,
        request: pytest.FixtureRequest) -> None:
    port = free_port()
    database_url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    config, db_path, jsonl = write_config(tmp_path, mock_upstream.url, port, receiver.url,
                                          database_url)

    def stored_ids() -> set[str]:
        events = postgres_events(database_url) if database_url else stored_events(db_path)
        return {e["event_id"] for e in events}

    key = make_key(config)
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--workers", "2", "--config",
             str(config)], cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_serving(process, url, log)
        with httpx2.Client(base_url=url, timeout=30) as http:
            for number in range(REQUESTS):  # a new connection each: both workers serve some
                response = http.post(
                    "/policy/chat/completions",
                    headers={"authorization": f"Bearer {key}", "connection": "close",
                             "x-policy-user": f"user-{number}"},
                    json={"model": "gpt-x",
                          "messages": [{"role": "user", "content": "Where is my order?"}]})
                assert response.status_code == 200, response.text
        deadline = time.monotonic() + 30
        while True:
            stored = stored_ids()
            if (len(stored) >= REQUESTS and set(receiver.event_ids) >= stored
                    and set(jsonl_event_ids(jsonl)) >= stored):
                break
            assert time.monotonic() < deadline, (
                f"not all delivered: {len(stored)} stored, {len(receiver.event_ids)} posted, "
                f"{len(jsonl_event_ids(jsonl))} lines; log:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        time.sleep(1.0)  # a worker delivering the same events too would do so by now
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    stored = stored_ids()
    posted, lines = Counter(receiver.event_ids), Counter(jsonl_event_ids(jsonl))
    assert set(posted) == stored and set(lines) == stored
    assert [i for i, n in posted.items() if n > 1] == [], "the webhook got an event twice"
    assert [i for i, n in lines.items() if n > 1] == [], "the file holds an event twice"
