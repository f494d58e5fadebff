"""An attacker's pass over the management API with the shared PostgreSQL store: account B's
admin (a JWT of B) tries account A's projects, keys and usage, and plants a project in A, on a
gateway whose identity and policies live in PostgreSQL. The answers are those of the SQLite
deployment (test_f03_admin_tenancy.py): another account's resource answers like a missing one,
and nothing of A changes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from e2e.harness import GatewayFactory

from gateway.identity.keys import IdentityStore
from gateway.identity.projects import ProjectStore
from gateway.storage.postgres import Postgres
from gateway.storage.settings import PostgresSettings
from gateway.storage.sql import PostgresSql

from .conftest import ADMIN_TOKEN, GUARD, JWT_SECRET, SUPER_ADMIN_ROLE, Capture, Secure
from .test_f03_admin_tenancy import (
    test_an_account_admin_cannot_touch_another_accounts_resources as f03_cross_account,
)
from .test_f03_admin_tenancy import (
    test_the_admin_token_and_the_super_admin_role_cross_accounts as f03_super_admin,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_secure(postgres_url: str, gateway_factory: GatewayFactory, tmp_path: Path,
              capture: Capture) -> Any:
    # `postgres_url` first: its database is dropped after the gateway stopped (a gateway
    # stopping on a dropped database waits for its connections).
    policies = tmp_path / "pg-secure-policies"
    policies.mkdir()
    (policies / "guard.pol").write_text(GUARD)
    running = gateway_factory({
        "database": {"url": postgres_url, "poll_interval": 0.05},
        "policies": {"directory": str(policies)},
        "admin": {"token": ADMIN_TOKEN},
        "jwt": {"algorithm": "HS256", "secret": JWT_SECRET,
                "super_admin_role": SUPER_ADMIN_ROLE, "subject_claim": "sub"},
        "escalation": {"targets": {"oncall": {"url": capture.url + "/oncall"}}}},
        plan="control")
    pg = Postgres(PostgresSettings(url=postgres_url, pool_min_size=0, pool_max_size=2,
                                   connect_timeout=5)).__enter__()
    try:
        db = PostgresSql(pg)
        identity, projects = IdentityStore(db), ProjectStore(db)
        account_a = identity.create_account("tenant-a", "control")
        account_b = identity.create_account("tenant-b", "control")
        projects.create("proj_a", account_id=account_a.id, name="A", policy_id="guard",
                        allow_inline_policy=False, known_policies={"guard"})
        projects.create("proj_b", account_id=account_b.id, name="B", policy_id="guard",
                        known_policies={"guard"})
        secure = Secure(gateway=running, policies=policies, account_a=account_a.id,
                        account_b=account_b.id)
        secure.keys["a"] = identity.create_key(account_a.id, project_id="proj_a")[1]
        secure.keys["b"] = identity.create_key(account_b.id, project_id="proj_b")[1]
    finally:
        pg.close()
    _until(lambda: secure.chat("hello").status_code == 200)
    return secure


def _until(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "the gateway never saw the PostgreSQL identity"
        time.sleep(0.05)


def test_an_account_admin_cannot_touch_another_accounts_resources_on_postgres(
        pg_secure: Secure) -> None:
    f03_cross_account(pg_secure)


def test_only_the_admin_token_and_the_super_admin_cross_accounts_on_postgres(
        pg_secure: Secure) -> None:
    f03_super_admin(pg_secure)


def test_a_key_of_account_b_cannot_use_account_a_project_on_postgres(pg_secure: Secure) -> None:
    refused = pg_secure.chat("hello", key=pg_secure.keys["b"],
                             headers={"x-policy-project": pg_secure.project_a})
    assert refused.status_code in (403, 404), refused.text
    member = pg_secure.token("bob", pg_secure.account_b)
    with httpx2.Client(base_url=pg_secure.url, timeout=10) as client:
        answer = client.post("/policy/v1/chat/completions",
                             headers={"authorization": f"Bearer {member}",
                                      "x-policy-project": pg_secure.project_a},
                             json={"model": "gpt-4o-mini",
                                   "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code in (403, 404), answer.text
