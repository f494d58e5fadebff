"""Running real gateways for end-to-end tests: each one is served by hypercorn's trio worker in
a background thread (`ThreadServer`) with its own SQLite file, an account and one key.

Used by the fixtures in tests/conftest.py; tests import the constants and helpers from here.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import sqlite_utils
from mock_upstream import SCENARIO_HEADER
from quart_trio import QuartTrio
from servers import ThreadServer

from gateway import Config, create_app
from gateway.db import open_database
from gateway.identity.keys import Account, ApiKey, IdentityStore
from gateway.storage.postgres import Postgres
from gateway.storage.sql import PostgresSql

#: The provider credentials the gateway holds; clients never see or send them.
UPSTREAM_OPENAI_KEY = "sk-upstream-openai-0123456789"
UPSTREAM_ANTHROPIC_KEY = "sk-ant-upstream-0123456789"


@dataclass
class RunningGateway:
    """A gateway serving on `url`, its database, and one account with one valid key."""

    server: ThreadServer
    db_path: Path
    store: IdentityStore
    account: Account
    key_record: ApiKey
    #: The plaintext gateway key of `account`.
    key: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def app(self) -> QuartTrio:
        app: QuartTrio = self.server.app
        return app

    def new_key(self, label: str = "") -> tuple[ApiKey, str]:
        """Another key of the same account (for tests that revoke one)."""
        return self.store.create_key(self.account.id, label=label)


def mock_providers(mock_url: str) -> dict[str, Any]:
    """The `providers` section that sends both APIs to the mock, with upstream keys set."""
    return {
        "openai": {"kind": "openai", "base_url": mock_url + "/v1", "api_key": UPSTREAM_OPENAI_KEY},
        "anthropic": {"kind": "anthropic", "base_url": mock_url,
                      "api_key": UPSTREAM_ANTHROPIC_KEY},
    }


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (the port was just released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def start_gateway(directory: Path, config: Mapping[str, Any], *, plan: str = "free",
                  echo_transport: httpx2.AsyncBaseTransport | None = None,
                  configure_app: Callable[[QuartTrio], None] | None = None) -> RunningGateway:
    """Start a gateway from `config` (the TOML mapping; `database.path` is set here, other
    `[database]` keys such as `url` are kept) with an
    account of `plan` and one key. Call `stop_gateway` when done."""
    db_path = directory / "gateway.db"
    # The mock upstream's per-request scenario header is not one a provider API defines: it
    # passes through the documented `[upstream] forward_headers` knob, as any extra would.
    mapping = {"upstream": {"forward_headers": [SCENARIO_HEADER]}, **config,
               "database": {**config.get("database", {}), "path": str(db_path)}}
    parsed = Config.from_mapping(mapping, env={})
    store = identity_store(parsed)
    account = store.create_account("e2e", plan)
    key_record, key = store.create_key(account.id, label="e2e")

    def make_app() -> QuartTrio:
        app = create_app(parsed, echo_transport=echo_transport)
        if configure_app is not None:
            configure_app(app)
        return app

    server = ThreadServer(make_app).start()
    return RunningGateway(server=server, db_path=db_path, store=store, account=account,
                          key_record=key_record, key=key)


def identity_store(config: Config) -> IdentityStore:
    """Where the gateway of `config` reads accounts and keys: its SQLite file, or the
    PostgreSQL that `[database] url` names."""
    if config.postgres is None:
        return IdentityStore(open_database(config.database_path))
    pg = Postgres(config.postgres)
    pg.open()
    return IdentityStore(PostgresSql(pg))


def close_identity_store(store: IdentityStore) -> None:
    if isinstance(store.sql, PostgresSql):
        store.sql.pg.close()
    else:
        db: sqlite_utils.Database = store.db
        db.conn.close()


def stop_gateway(gateway: RunningGateway) -> None:
    try:
        gateway.server.stop()
    finally:
        close_identity_store(gateway.store)


#: `make(config=None, **start_gateway_kwargs)`, the `gateway_factory` fixture.
GatewayFactory = Callable[..., RunningGateway]
