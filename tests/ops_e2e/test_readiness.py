"""`/readyz` turns 503 while the database cannot be opened at its path, says why, and comes back;
`/healthz` stays 200 (liveness only). The database's directory is renamed away and back (the
tests run as root, so removing permissions would not make the file unreadable)."""

from __future__ import annotations

import shutil
import time
from typing import Any

import httpx2
from e2e.harness import GatewayFactory

ADMIN = "readiness-admin-" + "a" * 24


def _wait_for(url: str, status: int, timeout: float = 10.0) -> httpx2.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx2.get(url, timeout=10)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def test_readiness_flips_while_the_database_is_unavailable(gateway_factory: GatewayFactory
                                                           ) -> None:
    gateway = gateway_factory({"admin": {"token": ADMIN}})
    ready = httpx2.get(gateway.url + "/readyz", timeout=10)
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})

    directory = gateway.db_path.parent
    moved = directory.with_name(directory.name + "-moved")
    directory.rename(moved)
    try:
        not_ready = _wait_for(gateway.url + "/readyz", 503)
        # Without the admin token: only the reason code, no path and no database error.
        assert (not_ready.status_code, not_ready.json()) == (
            503, {"status": "not_ready", "reasons": ["database_unavailable"]})
        detailed = httpx2.get(gateway.url + "/readyz", timeout=10,
                             headers={"authorization": f"Bearer {ADMIN}"})
        body: dict[str, Any] = detailed.json()
        assert detailed.status_code == 503, body
        assert body["status"] == "not_ready" and body["reasons"] == ["database_unavailable"]
        assert body["database"].startswith("unavailable")
        assert body["policy_errors"] == [] and body["shutting_down"] is False
        # An API key is no admin credential: the public answer, never a 500.
        with_key = httpx2.get(gateway.url + "/readyz", timeout=10,
                             headers={"authorization": f"Bearer {gateway.key}"})
        assert (with_key.status_code, with_key.json()) == (
            503, {"status": "not_ready", "reasons": ["database_unavailable"]})
        assert httpx2.get(gateway.url + "/healthz", timeout=10).status_code == 200
    finally:
        # Some component (not /readyz: its probe opens with mode=rw, which creates nothing) may
        # have created a fresh database at the path meanwhile; it is not the gateway's.
        if directory.exists():
            shutil.rmtree(directory)
        moved.rename(directory)
    back = _wait_for(gateway.url + "/readyz", 200)
    assert (back.status_code, back.json()) == (200, {"status": "ready"})
