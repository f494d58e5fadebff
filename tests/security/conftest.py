"""The trust-boundary suite: each test replays one attack against a real gateway
served by hypercorn on 127.0.0.1 and checks that it now holds.

- `capture`: a listener that records every request it gets (the SSRF target, and
  the escalation webhook when notices are meant to arrive).
- `secure`: a gateway with two `control` accounts (A and B), one project each linked to a
  policy of its own directory, keys for both, an admin token and HS256 JWTs.

`/readyz` details without credentials are covered with the readiness tests, in tests/ops_e2e.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from e2e.harness import GatewayFactory, RunningGateway
from servers import RecordingServer

from gateway.db import open_database
from gateway.identity.keys import IdentityStore
from gateway.identity.projects import ProjectStore

ADMIN_TOKEN = "security-admin-" + "t" * 24
JWT_SECRET = "security-jwt-secret-" + "s" * 32
SUPER_ADMIN_ROLE = "operator"
PREFIX = "/api/policy-gateway"

GUARD = '''policy v1 "guard" {
  name "Guard"
  default allow
  escalation_path "oncall"
  denylist banned = ["pineapple"]
  rule banned_words {
    when input contains any of banned
    then refuse reason BANNED
  }
  rule wants_human {
    when last_user contains "speak to a human"
    then escalate reason HUMAN_REQUESTED
  }
}
'''


#: The listener `capture` gives: what it received is `.received`, in order.
Capture = RecordingServer


@pytest.fixture
def capture() -> Iterator[Capture]:
    with RecordingServer() as server:
        yield server


@dataclass
class Secure:
    gateway: RunningGateway
    policies: Path
    account_a: str
    account_b: str
    project_a: str = "proj_a"
    project_b: str = "proj_b"
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def state(self) -> Any:
        return self.gateway.app.extensions["gateway"]

    def token(self, sub: str, account: str, roles: list[str] | None = None,
              **claims: Any) -> str:
        payload = {"sub": sub, "org_id": account, "exp": int(time.time() + 300),
                   "projects": "*", **claims}
        if roles is not None:
            payload["roles"] = roles
        return jwt.encode(payload, JWT_SECRET, algorithm="HS256")

    def admin(self, credential: str = ADMIN_TOKEN) -> httpx2.Client:
        return httpx2.Client(base_url=self.url + PREFIX, timeout=10,
                            headers={"authorization": f"Bearer {credential}"})

    def chat(self, text: str, *, key: str | None = None, path: str = "/policy/v1",
             headers: dict[str, str] | None = None, **fields: Any) -> httpx2.Response:
        return httpx2.post(self.url + path + "/chat/completions", timeout=15,
                          headers={"authorization": f"Bearer {key or self.keys['a']}",
                                   **(headers or {})},
                          json={"model": "gpt-4o-mini", **fields,
                                "messages": [{"role": "user", "content": text}]})


def _make_secure(gateway_factory: GatewayFactory, tmp_path: Path,
                 config: dict[str, Any]) -> Secure:
    policies = tmp_path / "secure-policies"
    policies.mkdir(exist_ok=True)
    (policies / "guard.pol").write_text(GUARD)
    running = gateway_factory({"policies": {"directory": str(policies),
                                            **config.pop("policies", {})},
                               "admin": {"token": ADMIN_TOKEN},
                               "jwt": {"algorithm": "HS256", "secret": JWT_SECRET,
                                       "super_admin_role": SUPER_ADMIN_ROLE,
                                       "subject_claim": config.pop("jwt_subject_claim",
                                                                   "sub")},
                               **config}, plan="control")
    db = open_database(running.db_path)
    try:
        account_b = IdentityStore(db).create_account("tenant-b", "control")
        projects = ProjectStore(db)
        projects.create("proj_a", account_id=running.account.id, name="A", policy_id="guard",
                        allow_inline_policy=False, known_policies={"guard"})
        projects.create("proj_b", account_id=account_b.id, name="B", policy_id="guard",
                        known_policies={"guard"})
    finally:
        db.conn.close()
    secure = Secure(gateway=running, policies=policies, account_a=running.account.id,
                    account_b=account_b.id)
    secure.keys["a"] = running.store.create_key(running.account.id, project_id="proj_a")[1]
    secure.keys["b"] = running.store.create_key(account_b.id, project_id="proj_b")[1]
    return secure


@pytest.fixture
def make_secure(gateway_factory: GatewayFactory, tmp_path: Path,
                capture: Capture) -> Callable[..., Secure]:
    """`make(**sections)`: a secure gateway whose `oncall` escalation target is `capture`."""

    def make(**config: Any) -> Secure:
        escalation = {"targets": {"oncall": {"url": capture.url + "/oncall"}},
                      "retry_initial": 0.05, **config.pop("escalation", {})}
        return _make_secure(gateway_factory, tmp_path, {"escalation": escalation, **config})

    return make


@pytest.fixture
def secure(make_secure: Callable[..., Secure]) -> Secure:
    return make_secure()

