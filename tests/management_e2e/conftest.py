"""Fixtures for the management API: a gateway with an admin token, a JWT configuration, a
policies directory of its own (tests edit it), a `control` account with one project linked to
the `guard` policy, and a key bound to that project."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from e2e.harness import RunningGateway, mock_providers, start_gateway, stop_gateway
from mock_upstream import MockUpstream

from gateway.db import open_database
from gateway.identity.projects import ProjectStore

ADMIN_TOKEN = "admin-token-" + "z" * 24
JWT_SECRET = "management-jwt-secret-" + "y" * 32
PREFIX = "/api/policy-gateway"
#: The role that makes a JWT admin of every account (policies are shared by all of them).
SUPER_ADMIN_ROLE = "operator"


def guard_source(word: str, policy_id: str = "guard") -> str:
    """A policy that refuses any input containing `word`."""
    return f'''policy v1 "{policy_id}" {{
  name "Guard"
  default allow
  denylist banned = ["{word}"]
  rule banned_words {{
    when input contains any of banned
    then refuse reason BANNED
  }}
}}
'''


@dataclass
class Managed:
    gateway: RunningGateway
    policies: Path
    project_id: str
    key: str

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def state(self) -> Any:
        return self.gateway.app.extensions["gateway"]

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.state.events.events
                if event_type is None or e["event_type"] == event_type]

    def admin(self) -> httpx2.Client:
        return httpx2.Client(base_url=self.url + PREFIX, timeout=10,
                            headers={"authorization": f"Bearer {ADMIN_TOKEN}"})

    def token(self, sub: str, roles: list[str] | None = None) -> str:
        claims: dict[str, Any] = {"sub": sub, "org_id": self.gateway.account.id,
                                  "exp": int(time.time() + 300)}
        if roles is not None:
            claims["roles"] = roles
        return jwt.encode(claims, JWT_SECRET, algorithm="HS256")

    def chat(self, text: str, key: str | None = None) -> httpx2.Response:
        return httpx2.post(self.url + "/policy/v1/chat/completions", timeout=10,
                          headers={"authorization": f"Bearer {key or self.key}"},
                          json={"model": "gpt-4o-mini",
                                "messages": [{"role": "user", "content": text}]})


@pytest.fixture
def managed(mock_upstream: MockUpstream, tmp_path: Path) -> Iterator[Managed]:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "guard.pol").write_text(guard_source("pineapple"))
    config = {"providers": mock_providers(mock_upstream.url),
              "policies": {"directory": str(policies)},
              "admin": {"token": ADMIN_TOKEN},
              "jwt": {"algorithm": "HS256", "secret": JWT_SECRET,
                      "super_admin_role": SUPER_ADMIN_ROLE}}
    running = start_gateway(tmp_path, config, plan="control")
    db = open_database(running.db_path)
    ProjectStore(db).create("proj_guarded", account_id=running.account.id, name="Guarded",
                            policy_id="guard")
    db.conn.close()
    _, key = running.store.create_key(running.account.id, project_id="proj_guarded")
    yield Managed(gateway=running, policies=policies, project_id="proj_guarded", key=key)
    stop_gateway(running)
