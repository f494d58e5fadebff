"""The first start of `python -m gateway serve` without an admin token generates one, keeps it in
the data directory for its owner only, says so once, and uses the same one after a restart (with
several workers too). The start-up log says where it listens, which database, which policies
and which providers. A 401 of the management API says whether no token is configured or the
one given is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx2
from e2e.harness import GatewayFactory

from gateway.datadir import NO_ADMIN_TOKEN, WRONG_ADMIN_TOKEN

from .conftest import REPO, Server

POLICIES = "/api/policy-gateway/policies"


def _restart(server: Server, workers: int) -> Server:
    """The same configuration and data directory, started again."""
    with server.log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--workers", str(workers), "--config",
             str(server.root / "gateway.toml")], cwd=REPO,
            env={k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    again = Server(url=server.url, root=server.root, db_path=server.db_path,
                   policies=server.policies, key=server.key, quota_key=server.quota_key,
                   workers=workers, process=process)
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, server.log_path.read_text()
        try:
            if httpx2.get(again.url + "/healthz", timeout=1).status_code == 200:
                return again
        except httpx2.HTTPError:
            pass
        assert time.monotonic() < deadline, "the gateway did not start again"
        time.sleep(0.1)


def _messages(server: Server) -> list[str]:
    """The log's messages once the start-up lines are written (a background thread writes the
    log, so they may land just after the gateway answers)."""
    deadline = time.monotonic() + 10
    while True:
        messages = [json.loads(line)["message"] for line in server.log_lines()]
        if any(m.startswith("provider anthropic") for m in messages):
            return messages
        assert time.monotonic() < deadline, messages
        time.sleep(0.05)


def _admin_token_command(server: Server) -> str:
    done = subprocess.run([sys.executable, "-m", "gateway", "admin-token", "--config",
                           str(server.root / "gateway.toml")], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stdout.strip()


def test_the_generated_admin_token_is_announced_once_and_kept_across_restarts(make_server):
    server = make_server()
    token_file = server.root / "admin-token"
    token = token_file.read_text().strip()
    assert token_file.stat().st_mode & 0o777 == 0o600
    messages = _messages(server)
    assert sum(token in m for m in messages) == 1
    assert any("python -m gateway admin-token" in m for m in messages)
    assert _admin_token_command(server) == token
    # One line each: the address, the database, the policies in force, every provider.
    assert f"listening on {server.url}" in messages
    assert f"database {server.db_path}" in messages
    assert f"policies from {server.policies}: ops_open@1" in messages
    assert any(m.startswith("provider openai (openai) -> http://127.0.0.1:") and
               m.endswith("routes: default for openai") for m in messages)

    with httpx2.Client(base_url=server.url, timeout=10) as http:
        assert http.get(POLICIES, headers={"authorization": f"Bearer {token}"}).status_code == 200
        missing = http.get(POLICIES)
        assert missing.status_code == 401
        assert "admin-token" in missing.json()["error"]["message"]
        wrong = http.get(POLICIES, headers={"authorization": "Bearer not-the-token"})
        assert (wrong.status_code, wrong.json()["error"]["message"]) == (401, WRONG_ADMIN_TOKEN)
    assert server.terminate() == 0

    again = _restart(server, workers=2)
    try:
        assert token_file.read_text().strip() == token
        messages = _messages(again)
        assert not any(token in m for m in messages)  # shown once, on the first start
        assert any(f"admin token is the one generated in {token_file}" in m for m in messages)
        with httpx2.Client(base_url=again.url, timeout=10,
                          headers={"authorization": f"Bearer {token}"}) as http:
            # Several requests: every worker knows the token.
            assert {http.get(POLICIES).status_code for _ in range(8)} == {200}
    finally:
        again.kill()


def test_a_gateway_without_any_admin_token_says_so(gateway_factory: GatewayFactory):
    gateway = gateway_factory()  # built by create_app directly: no token configured, none made
    for headers in ({}, {"authorization": "Bearer some-guess"}):
        response = httpx2.get(gateway.url + POLICIES, headers=headers, timeout=10)
        assert (response.status_code, response.json()["error"]["message"]) == (
            401, NO_ADMIN_TOKEN), headers


def test_a_configured_admin_token_is_used_and_nothing_is_generated(make_server):
    server = make_server(extra_toml='\n[admin]\ntoken = "configured-admin-token-0123456789"\n')
    assert not (server.root / "admin-token").exists()
    response = httpx2.get(server.url + POLICIES, timeout=10,
                         headers={"authorization": "Bearer configured-admin-token-0123456789"})
    assert response.status_code == 200
