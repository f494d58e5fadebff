"""Three replicas, each with its own data directory and SQLite file, sharing one PostgreSQL for
events (`[database] url`): traffic spread across all three appears exactly once in the history
read on any of them, a cursor taken on one replica continues on another while all three keep
writing, and each event reaches a connector's webhook once, whichever replica holds its lease.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest
from events_e2e.events_support import postgres_events, wait_for
from mock_upstream import MockUpstream
from quota_e2e.conftest import Workers, start_workers, stop_workers

from .conftest import HERE

ADMIN_TOKEN = "admin-token-for-replica-events-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


class WebhookSink:
    """The connector's destination: records the event id of every POST, answers 204."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with sink._lock:
                    sink.received.append(json.loads(body)["event_id"])
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def hook() -> Iterator[WebhookSink]:
    sink = WebhookSink()
    yield sink
    sink.close()


@pytest.fixture(scope="module")
def shared_pg(postgres_server: Any) -> Iterator[str]:
    """A database of this module's own (the replicas outlive any one test)."""
    from postgres_server import MIGRATED_TEMPLATE

    name = "replica_events"
    postgres_server.drop_database(name)
    yield postgres_server.create_database(name, MIGRATED_TEMPLATE)
    postgres_server.drop_database(name)


@pytest.fixture(scope="module")
def replicas(mock_upstream: MockUpstream, shared_pg: str, hook: WebhookSink,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Workers]]:
    root = tmp_path_factory.mktemp("replica-events")
    # Inside [quotas] first (see start_workers), then sections of their own.
    extra = (f'\n[admin]\ntoken = "{ADMIN_TOKEN}"\n\n[events]\nbatch_seconds = 0.01\n\n'
             f'[[events.connectors]]\nname = "audit-hook"\ntype = "webhook"\n'
             f'url = "{hook.url}"\nretry_initial = 0.01\npoll_seconds = 0.2\n')
    members: list[Workers] = []
    try:
        for index in range(3):
            members.append(start_workers(root / f"replica{index}", mock_upstream.url,
                                         processes=1, extra_config=extra,
                                         extra_policies=tuple((HERE / "policies").glob("*.pol")),
                                         database_url=shared_pg,
                                         account_name=f"events-replica-{index}"))
        yield members
    finally:
        for member in members:
            stop_workers(member)


@pytest.fixture(scope="module")
def project_key(replicas: list[Workers]) -> tuple[str, str]:
    """A project and key made on replica 0, in the shared PostgreSQL: returned once every
    replica answers it (each sees identity changes within its poll interval)."""
    project_id, key = replicas[0].project()
    for member in replicas:
        # /v1/models records no event, so the tests' event counts stay exact.
        assert wait_for(lambda url=member.url: httpx2.get(
            url + "/v1/models", headers={"authorization": f"Bearer {key}"},
            timeout=10).status_code == 200, timeout=10), member.url
    return project_id, key


def chat(url: str, key: str, user: str) -> int:
    response = httpx2.post(url + "/policy/chat/completions", timeout=30, headers={
        "authorization": f"Bearer {key}", "x-policy-user": user},
        json={"model": "gpt-x", "messages": [{"role": "user", "content": "hello"}]})
    return response.status_code


def spread_traffic(replicas: list[Workers], key: str, prefix: str, count: int) -> list[str]:
    """`count` requests over the three replicas from three threads at once; the users sent."""
    users = [f"{prefix}-{n}" for n in range(count)]

    def send(offset: int) -> None:
        for n in range(offset, count, 3):
            # Each thread goes round the replicas: all three write all the time.
            assert chat(replicas[(n + offset) % 3].url, key, users[n]) == 200

    threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return users


def history_pages(urls: Iterator[str], **params: Any) -> list[dict[str, Any]]:
    """Every page of the history, each page read from the next replica of `urls`."""
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        page = httpx2.get(next(urls) + "/api/policy-gateway/history", params=query,
                         headers=ADMIN, timeout=30)
        assert page.status_code == 200, page.text
        body = page.json()
        seen += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen


def test_traffic_on_all_replicas_is_in_every_replicas_history_exactly_once(
        replicas: list[Workers], project_key: tuple[str, str], shared_pg: str) -> None:
    project_id, key = project_key
    users = spread_traffic(replicas, key, "spread", 60)
    stored = lambda: [e for e in postgres_events(shared_pg)  # noqa: E731
                      if e.get("project_id") == project_id]
    assert wait_for(lambda: len(stored()) >= 60, timeout=20)
    for member in replicas:
        events = history_pages(itertools.repeat(member.url), project_id=project_id, limit=7)
        assert Counter(e["policy_user"] for e in events) == Counter(users), member.url
        assert [e["event_id"] for e in events] == [e["event_id"] for e in reversed(stored())]


def test_a_cursor_continues_on_another_replica_while_all_of_them_write(
        replicas: list[Workers], project_key: tuple[str, str], shared_pg: str) -> None:
    project_id, key = project_key
    before = {e["event_id"] for e in postgres_events(shared_pg)
              if e.get("project_id") == project_id}
    writing = threading.Thread(target=spread_traffic, args=(replicas, key, "during", 45))
    writing.start()
    try:
        urls = itertools.cycle(member.url for member in replicas)
        seen = [e["event_id"] for e in history_pages(urls, project_id=project_id, limit=5)]
    finally:
        writing.join()
    assert len(seen) == len(set(seen)), "an event appeared on two pages"
    assert before <= set(seen), "an event that existed before paging was skipped"
    stored = [e["event_id"] for e in postgres_events(shared_pg)
              if e.get("project_id") == project_id]
    newest_seen = max(stored.index(s) for s in seen)
    assert seen == list(reversed(stored[:newest_seen + 1])), "pages are newest first, gapless"


def test_each_event_is_delivered_once_per_connector(
        replicas: list[Workers], project_key: tuple[str, str], shared_pg: str,
        hook: WebhookSink) -> None:
    _, key = project_key
    users = set(spread_traffic(replicas, key, "hooked", 30))
    every = lambda: {e["event_id"] for e in postgres_events(shared_pg)}  # noqa: E731
    # The writers store the answered requests' events in their next batches: all of them first.
    assert wait_for(lambda: users <= {e.get("policy_user") for e in postgres_events(shared_pg)},
                    timeout=30)
    stored = every()
    assert wait_for(lambda: set(hook.received) >= stored, timeout=30), "an event not delivered"
    twice = [event_id for event_id, n in Counter(hook.received).items() if n > 1]
    assert not twice, f"{len(twice)} events were delivered more than once"
    assert set(hook.received) <= every(), "the hook got an event that was never stored"



def _replica_of(pid: int, replicas: list[Workers]) -> int:
    """Which replica's process tree `pid` belongs to (the serve process or one of its workers)."""
    roots = {member.process.pid: index for index, member in enumerate(replicas)}
    while pid > 1:
        if pid in roots:
            return roots[pid]
        status = Path(f"/proc/{pid}/status").read_text()
        pid = int(next(line.split()[1] for line in status.splitlines()
                       if line.startswith("PPid:")))
    raise AssertionError("the lease holder is no replica's process")


def test_another_replica_takes_the_connector_over_when_its_holder_stops(
        replicas: list[Workers], project_key: tuple[str, str], shared_pg: str,
        hook: WebhookSink, postgres_server: Any) -> None:
    """Last in the module: it stops one replica. A clean stop releases the lease, so another
    replica delivers from the recorded progress at once: nothing lost, nothing twice."""
    _, key = project_key
    [(owner,)] = postgres_server.execute(
        "SELECT owner FROM connector_leases WHERE connector = 'audit-hook'",
        database=shared_pg.rsplit("/", 1)[1])
    holder = _replica_of(int(owner.split(":")[1]), replicas)
    stop_workers(replicas[holder])
    others = [member for index, member in enumerate(replicas) if index != holder]
    for n in range(12):
        assert chat(others[n % 2].url, key, f"after-stop-{n}") == 200
    every = lambda: {e["event_id"] for e in postgres_events(shared_pg)}  # noqa: E731
    assert wait_for(lambda: set(hook.received) >= every(), timeout=30), "delivery stalled"
    twice = [event_id for event_id, n in Counter(hook.received).items() if n > 1]
    assert not twice, f"{len(twice)} events were delivered more than once"
