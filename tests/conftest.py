"""Shared fixtures: a mock provider and real gateways serving over real sockets.

- `mock_upstream` (session): one `MockUpstream` for the whole run; `mock` resets it per test.
- `gateway` (session): the gateway with both providers pointing at the mock, with real upstream
  keys, so every request goes over HTTP to the mock; a `free` account and its key are ready.
- `echo_gateway` (session): a gateway with no provider keys, answered by the built-in echo.
- `gateway_factory`: more gateways with a different configuration, stopped after the test.
- `postgres_server` (session): a real PostgreSQL; `postgres_url` a fresh migrated database of
  the test's own, `empty_postgres_url` a fresh one without the schema.

A gateway is served by hypercorn's trio worker in a background thread (`ThreadServer`), so sync
SDK clients and trio tests both talk to it exactly as users do.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from e2e.harness import GatewayFactory, RunningGateway, mock_providers, start_gateway, stop_gateway
from mock_upstream import MockUpstream
from postgres_server import MIGRATED_TEMPLATE, PostgresServer
from redis_server import RedisServer
from storage_backends import PostgresBackend, SqliteBackend


@pytest.fixture(scope="session")
def mock_upstream() -> Iterator[MockUpstream]:
    with MockUpstream() as server:
        yield server
        assert server.errors == [], "the mock upstream itself failed"


@pytest.fixture
def mock(mock_upstream: MockUpstream) -> MockUpstream:
    """The shared mock, with its record of requests and disconnects emptied."""
    mock_upstream.reset()
    return mock_upstream


@pytest.fixture(scope="session")
def gateway(mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[RunningGateway]:
    running = start_gateway(tmp_path_factory.mktemp("gateway"),
                            {"providers": mock_providers(mock_upstream.url)})
    yield running
    stop_gateway(running)


@pytest.fixture(scope="session")
def echo_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    running = start_gateway(tmp_path_factory.mktemp("echo-gateway"), {})
    yield running
    stop_gateway(running)


@pytest.fixture
def gateway_factory(mock_upstream: MockUpstream, tmp_path: Path) -> Iterator[GatewayFactory]:
    """`make(config=None, **start_gateway_kwargs)`: a gateway with its own database; the config
    defaults to providers at the mock, and sections given in `config` replace those."""
    started: list[RunningGateway] = []

    def make(config: Mapping[str, Any] | None = None, **kwargs: Any) -> RunningGateway:
        mapping = {"providers": mock_providers(mock_upstream.url), **(config or {})}
        running = start_gateway(tmp_path / f"gw{len(started)}", mapping, **kwargs)
        started.append(running)
        return running

    yield make
    for running in started:
        stop_gateway(running)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the run, started on first use."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server: RedisServer) -> RedisServer:
    """The shared redis-server, emptied, and started again if a test killed it."""
    if not redis_server.ping():
        redis_server.start()
    assert redis_server.command("FLUSHALL") == "OK"
    return redis_server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the run (started on first use), with a template database
    holding the gateway's schema, so each test's fresh database costs one CREATE DATABASE."""
    server = PostgresServer().start()
    server.create_migrated_template()
    yield server
    server.remove()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The url of a fresh database of this test's own, with the gateway's schema in place."""
    yield from _fresh_database(postgres_server, MIGRATED_TEMPLATE)


@pytest.fixture
def empty_postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The url of a fresh database with no schema at all (what `migrate` starts from)."""
    yield from _fresh_database(postgres_server, "template1")


_databases = itertools.count()


def _fresh_database(server: PostgresServer, template: str) -> Iterator[str]:
    if not server.running():  # a test stopped it
        server.start()
    name = f"test_{os.getpid()}_{next(_databases)}"
    yield server.create_database(name, template)
    if not server.running():
        server.start()
    server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path
            ) -> Iterator[SqliteBackend | PostgresBackend]:
    """The store of identity, projects and policy revisions: a SQLite file, then a fresh
    PostgreSQL database (tests/storage_backends.py)."""
    store: SqliteBackend | PostgresBackend
    if request.param == "postgres":
        store = PostgresBackend(request.getfixturevalue("postgres_url"))
    else:
        store = SqliteBackend(tmp_path / "gw.db")
    yield store
    store.close()
