"""Connectors: a rotating JSON-lines file, and a webhook that fails, goes down, comes back, and
resumes after a gateway restart. Delivery is at least once: every stored event arrives."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from events_support import BOTH_BACKENDS, stored_events, wait_for

pytestmark = BOTH_BACKENDS

ORDER = "Where is my order?"
EMAIL = "ada.lovelace.1815@example.net"


class Receiver:
    """A webhook destination on a fixed port: answers 500 to every other POST while `flaky`,
    and can be stopped (connection refused) and started again on the same port."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.accepted: list[str] = []
        self.refused = 0
        self.headers: list[dict[str, str]] = []
        self.flaky = True
        self._posts = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver._lock:
                    receiver._posts += 1
                    fail = receiver.flaky and receiver._posts % 2 == 0
                    if fail:
                        receiver.refused += 1
                    else:
                        receiver.accepted.append(json.loads(body)["event_id"])
                        receiver.headers.append(dict(self.headers))
                self.send_response(500 if fail else 204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def test_a_webhook_gets_every_event_through_failures_downtime_and_a_restart(
        make_events_gateway, restart_events_gateway, mock):
    receiver = Receiver()
    receiver.start()
    hook = {"name": "audit-hook", "type": "webhook", "url": receiver.url, "timeout": 1.0,
            "retry_initial": 0.01, "retry_max": 0.05, "headers": {"x-audit-secret": "s3cret"}}
    try:
        gw = make_events_gateway(events={"batch_seconds": 0.01, "connectors": [hook]})
        for i in range(8):
            assert gw.chat(ORDER, user=f"first-{i}").status_code == 200
        stored = lambda: {e["event_id"] for e in stored_events(gw)}  # noqa: E731
        enforcement = lambda: [e for e in stored_events(gw)  # noqa: E731
                               if e["event_type"] == "enforcement"]
        assert wait_for(lambda: len(enforcement()) == 8 and set(receiver.accepted) >= stored())
        assert receiver.refused > 0, "the flaky receiver should have refused some posts"
        assert all(h.get("x-audit-secret") == "s3cret" for h in receiver.headers)
        before_restart = set(receiver.accepted)

        receiver.stop()  # down: connection refused
        for i in range(5):
            assert gw.chat(ORDER, user=f"second-{i}").status_code == 200
        gw.stop()
        missing = stored() - before_restart
        assert len(missing) == 5, "the events sent while the receiver was down are pending"

        receiver.flaky = False
        receiver.start()
        again = restart_events_gateway(gw)
        assert wait_for(lambda: set(receiver.accepted) >= stored())
        resumed = receiver.accepted[len(before_restart):]
        # Resumed from the recorded progress: not a replay from the start.
        assert set(resumed) & before_restart == set() and set(resumed) >= missing
        assert again.state.connectors[0].failures == 0
    finally:
        receiver.stop()


def test_a_dead_webhook_never_slows_requests_or_the_file_connector(make_events_gateway, mock,
                                                                   tmp_path: Path):
    lines = tmp_path / "audit" / "events.jsonl"
    dead = Receiver()  # never started: connection refused
    gw = make_events_gateway(events={"batch_seconds": 0.01, "connectors": [
        {"name": "dead", "type": "webhook", "url": dead.url, "retry_initial": 0.01},
        {"name": "file", "type": "jsonl", "path": str(lines), "max_bytes": 4000,
         "backups": 10}]})
    for i in range(20):
        response = gw.chat(f"{ORDER} Reply to {EMAIL}", user=f"f-{i}",
                           project="proj_pii" if i % 2 else "proj_support")
        assert response.status_code == 200
    files = lambda: sorted(lines.parent.glob("events.jsonl*"))  # noqa: E731

    def written() -> list[dict]:
        return [json.loads(line) for path in files() for line in path.read_text().splitlines()]

    assert wait_for(lambda: {e["event_id"] for e in written()}
                    >= {e["event_id"] for e in stored_events(gw)})
    assert len(files()) > 1, "4000 bytes cannot hold every event: the file should rotate"
    assert all(path.stat().st_size <= 4000 or len(path.read_text().splitlines()) == 1
               for path in files())
    hook_task = gw.state.connectors[0]
    assert hook_task.delivered == 0 and hook_task.failures > 0
    for path in files():
        raw = path.read_bytes()
        assert EMAIL.encode() not in raw and b"Where is my order" not in raw
