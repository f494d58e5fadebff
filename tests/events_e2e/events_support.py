"""Helpers for the durable-events tests: a governed gateway with an admin token (made by the
`make_events_gateway` fixture in conftest.py) and reads of the stored events.

`make_events_gateway(**config)` starts a gateway (through `gateway_factory`, so it is stopped
after the test) with the repository's policies plus the escalation test policy, a `control`
account, projects `proj_support` (support_bot), `proj_pii` (pii_redaction) and `proj_escalate`
(escalation), one key bound to each, and the admin token `ADMIN_TOKEN`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from e2e.harness import RunningGateway

from gateway.events.store import row_to_event

HERE = Path(__file__).parent
REPO_POLICIES = HERE.parents[1] / "policies"
ESCALATION_POLICY = HERE.parent / "policy_e2e" / "policies" / "escalation.pol"
ADMIN_TOKEN = "admin-token-for-event-tests-0123456789"
PROJECTS = {"proj_support": "support_bot", "proj_pii": "pii_redaction",
            "proj_escalate": "escalation"}

#: `pytestmark` of the modules that run against both event stores (fixture `events_backend`).
BOTH_BACKENDS = pytest.mark.parametrize("events_backend", ["sqlite", "postgres"], indirect=True)


@dataclass
class EventsGateway:
    gateway: RunningGateway
    keys: dict[str, str] = field(default_factory=dict)
    #: The configuration mapping it was started with (a restart reuses it).
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def postgres_url(self) -> str | None:
        """Where its events are when they go to PostgreSQL (`[database] url`), else None."""
        url: str | None = self.config.get("database", {}).get("url")
        return url

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def db_path(self) -> Path:
        return self.gateway.db_path

    @property
    def state(self) -> Any:
        return self.gateway.app.extensions["gateway"]

    def stop(self) -> None:
        self.gateway.server.stop()

    def chat(self, text: str, *, project: str = "proj_support", user: str = "u",
             timeout: float = 10.0, **extra: Any) -> httpx2.Response:
        headers = {"authorization": f"Bearer {self.keys[project]}", "x-policy-user": user,
                   **extra.pop("headers", {})}
        body = {"model": "gpt-x", "messages": [{"role": "user", "content": text}], **extra}
        return httpx2.post(self.url + "/policy/chat/completions", json=body, headers=headers,
                          timeout=timeout)

    def history(self, token: str | None = ADMIN_TOKEN, **params: Any) -> httpx2.Response:
        headers = {"authorization": f"Bearer {token}"} if token is not None else {}
        return httpx2.get(self.url + "/api/policy-gateway/history", params=params,
                         headers=headers, timeout=10.0)


def stored_events(source: Path | EventsGateway) -> list[dict[str, Any]]:
    """Every stored event, oldest first, read with a plain connection (as an auditor would):
    from the gateway's PostgreSQL when its events go there, else from its SQLite file."""
    if isinstance(source, EventsGateway):
        if source.postgres_url is not None:
            return postgres_events(source.postgres_url)
        source = source.db_path
    conn = sqlite3.connect(str(source))
    conn.row_factory = sqlite3.Row
    try:
        return [row_to_event(row) for row in
                conn.execute("SELECT * FROM policy_events ORDER BY seq")]
    finally:
        conn.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()




def postgres_events(url: str) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        return [row_to_event(row) for row in
                conn.execute("SELECT * FROM policy_events ORDER BY seq").fetchall()]
