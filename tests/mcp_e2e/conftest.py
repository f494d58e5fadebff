"""Fixtures of the MCP tests: a real MCP server process and a gateway in front of it.

- `mcp_upstream` (session): tests/mcp_e2e/mcp_server.py (FastMCP over Streamable HTTP, under
  uvicorn) on a free 127.0.0.1 port; it demands the credential the gateway's configuration holds.
- `mcp_json_upstream` (session): the same server answering POSTs with JSON bodies, not SSE.
- `mcp_gateway`: a gateway with `[mcp.servers]` `tools` (that server, `delete_*` denied),
  `tools_json` (the JSON one, likewise),
  `down` (nothing listens) and `hanging` (accepts, never answers), the repository's policies, a
  `control` account with project `proj_tools` (policy mcp_tools) and `proj_quota` (two tool
  calls a day), `proj_policy_quota` (policy mcp_tool_quota: its own `quota` blocks allow one
  tool call a day per user, and one request a day, which tool calls do not count toward),
  `proj_locked` (policy mcp_locked: no prompts for anyone, no resources for the user
  `intern`), one key bound to each, and HS256 JWTs (`JWT_SECRET`, `JWT_AUDIENCE`).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from e2e.harness import GatewayFactory, closed_port_url
from free_ports import free_port
from mcp_support import JWT_AUDIENCE, JWT_SECRET, McpGateway, McpUpstream

from gateway.db import open_database
from gateway.identity.projects import ProjectStore

HERE = Path(__file__).parent
REPO_POLICIES = HERE.parents[1] / "policies"
UPSTREAM_SECRET = "upstream-mcp-secret"
#: A policy whose own `quota` blocks limit tool calls.
TOOL_QUOTA_POLICY = """policy v1 "mcp_tool_quota" {
  default allow
  quota project { requests 1 per day }
  quota user { tool_calls 1 per day }
}
"""
#: A policy that refuses every prompt, and every resource to one user.
LOCKED_POLICY = """policy v1 "mcp_locked" {
  default allow
  rule no_prompts {
    when target == "mcp_prompt"
    then refuse reason NO_PROMPTS message "Prompts are not available to agents."
  }
  rule interns_read_no_resources {
    when target == "mcp_resource" and user == "intern"
    then refuse reason NO_RESOURCES
  }
}
"""


@pytest.fixture(scope="session")
def mcp_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpUpstream]:
    yield from _serve(tmp_path_factory.mktemp("mcp-markers"))


@pytest.fixture(scope="session")
def mcp_json_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpUpstream]:
    """The same server answering with JSON bodies instead of SSE streams."""
    yield from _serve(tmp_path_factory.mktemp("mcp-json-markers"), "json")


def _serve(markers: Path, *mode: str) -> Iterator[McpUpstream]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(HERE / "mcp_server.py"), str(port),
                                str(markers), *mode], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx2.get(url, timeout=1)  # any answer (401) means it is serving
                break
            except httpx2.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the MCP server did not start") from None
                time.sleep(0.1)
        yield McpUpstream(url=url, markers=markers)
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def hanging_url() -> Iterator[str]:
    """A server that accepts connections and reads requests but never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/mcp"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


@pytest.fixture
def mcp_gateway(gateway_factory: GatewayFactory, mcp_upstream: McpUpstream,
                mcp_json_upstream: McpUpstream, hanging_url: str, tmp_path: Path) -> McpGateway:
    policies = tmp_path / "policies"
    shutil.copytree(REPO_POLICIES, policies)
    (policies / "mcp_tool_quota.pol").write_text(TOOL_QUOTA_POLICY)
    (policies / "mcp_locked.pol").write_text(LOCKED_POLICY)
    running = gateway_factory({
        "policies": {"directory": str(policies)},
        "quotas": {"projects": {"proj_quota": {"budget": {"tool_calls": {"daily": 2}}}}},
        "jwt": {"algorithm": "HS256", "secret": JWT_SECRET, "audience": JWT_AUDIENCE},
        "mcp": {"servers": {
            "tools": {"url": mcp_upstream.url,
                      "headers": {"authorization": f"Bearer {UPSTREAM_SECRET}"},
                      "denied_tools": ["delete_*"]},
            "tools_json": {"url": mcp_json_upstream.url,
                           "headers": {"authorization": f"Bearer {UPSTREAM_SECRET}"},
                           "denied_tools": ["delete_*"]},
            "down": {"url": closed_port_url() + "/mcp", "connect_timeout": 2},
            "hanging": {"url": hanging_url, "idle_timeout": 0.5, "total_timeout": 5},
        }},
    }, plan="control")
    projects = ProjectStore(open_database(running.db_path))
    keys = {}
    for project_id, policy_id in (("proj_tools", "mcp_tools"), ("proj_quota", "mcp_tools"),
                                  ("proj_policy_quota", "mcp_tool_quota"),
                                  ("proj_locked", "mcp_locked")):
        projects.create(project_id=project_id, account_id=running.account.id,
                        name=project_id, policy_id=policy_id)
        keys[project_id] = running.store.create_key(running.account.id,
                                                    project_id=project_id)[1]
    projects.db.conn.close()
    return McpGateway(gateway=running, keys=keys, upstream=mcp_upstream)
