"""An attacker's pass over the governed MCP route (`/policy/mcp/NAME`): a client shapes its
JSON-RPC message so that the gateway decides one thing and the MCP server runs another. The
server here records what reaches it and answers every request with a plain result; the checks
are on what it received.

- duplicate keys: JSON parsers differ on which of two equal keys wins (orjson, Python and
  JavaScript take the last, others the first), so the server must get one reading only;
- method names in another case, batches: never relayed;
- `Mcp-Param-*` headers, which copy argument values for servers that route on them: the policy
  decided on the body, so they never reach the server beside a governed call;
- look-alike spellings of a tool the configuration denies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from e2e.harness import GatewayFactory, RunningGateway
from servers import Recorded, RecordingServer

from gateway.db import open_database
from gateway.identity.projects import ProjectStore

GOVERNED = "/policy/mcp/rec"
POLICY = '''policy v1 "mcp_attack" {
  name "MCP attack"
  default allow
  tools never_run = ["wipe_*"]
  rule no_wiping_tools {
    when tool.name in never_run
    then refuse reason TOOL_NOT_ALLOWED
  }
  denylist banned = ["pineapple"]
  rule banned_words {
    when input contains any of banned
    then refuse reason BANNED
  }
}
'''


def _mcp_result(request: Recorded) -> bytes:
    """Every request gets a plain result; `tools/list` one page of three tools."""
    message = json.loads(request.body) if request.body else {}
    result: dict[str, Any] = {"content": [{"type": "text", "text": "done"}]}
    if message.get("method") == "tools/list":
        result = {"tools": [{"name": name, "inputSchema": {"type": "object"}}
                            for name in ("echo", "wipe_disk", "delete_all")],
                  "nextCursor": "page-3"}
    return orjson.dumps({"jsonrpc": "2.0", "id": message.get("id"), "result": result})


@pytest.fixture
def recorder() -> Iterator[RecordingServer]:
    with RecordingServer(_mcp_result) as server:
        yield server


@dataclass
class Gateway:
    running: RunningGateway
    key: str

    def post(self, content: bytes, headers: dict[str, str] | None = None) -> httpx2.Response:
        return httpx2.post(self.running.url + GOVERNED, content=content, timeout=15, headers={
            "authorization": f"Bearer {self.key}", "content-type": "application/json",
            "accept": "application/json, text/event-stream", **(headers or {})})


@pytest.fixture
def gateway(gateway_factory: GatewayFactory, recorder: RecordingServer, tmp_path: Path) -> Gateway:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "mcp_attack.pol").write_text(POLICY)
    running = gateway_factory({
        "policies": {"directory": str(policies)},
        "mcp": {"servers": {"rec": {"url": recorder.url + "/mcp",
                                    "denied_tools": ["delete_*"]}}}}, plan="control")
    db = open_database(running.db_path)
    try:
        ProjectStore(db).create(project_id="proj_mcp", account_id=running.account.id,
                                name="MCP", policy_id="mcp_attack")
    finally:
        db.conn.close()
    return Gateway(running, running.store.create_key(running.account.id,
                                                     project_id="proj_mcp")[1])


def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys reached the server: {keys}"
    return dict(pairs)


def single_reading(body: bytes) -> Any:
    """The body as the server reads it, with any parser: no key appears twice."""
    return json.loads(body, object_pairs_hook=no_duplicates)


@pytest.mark.parametrize("content", [
    # The gateway reads the last `name`; a first-wins server would run the tool the policy
    # refuses.
    b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call",'
    b' "params": {"name": "wipe_disk", "name": "echo", "arguments": {}}}',
    b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo",'
    b' "arguments": {"text": "pineapple"}, "arguments": {"text": "hi"}}}',
    b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "wipe_disk"},'
    b' "params": {"name": "echo"}}',
    # A method the gateway relays unread, hiding a call for a first-wins server.
    b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "method": "ping",'
    b' "params": {"name": "wipe_disk"}}',
    b'{"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "wipe_disk"}, "id": 1,'
    b' "method": "notifications/initialized", "id": null}',
], ids=["name", "arguments", "params", "method", "notification"])
def test_duplicate_keys_never_reach_the_server_in_two_readings(
        gateway: Gateway, recorder: RecordingServer, content: bytes) -> None:
    response = gateway.post(content)
    assert response.status_code < 500
    for body in recorder.bodies:
        message = single_reading(body)
        params = message.get("params") or {}
        assert not (message.get("method") == "tools/call" and params.get("name") == "wipe_disk")
        assert "pineapple" not in body.decode()


@pytest.mark.parametrize("method", ["Tools/Call", "TOOLS/CALL", "tools/call ", "tools//call",
                                    "tools/call\u0000"])
def test_method_name_variants_are_not_relayed(gateway: Gateway, recorder: RecordingServer,
                                              method: str) -> None:
    response = gateway.post(orjson.dumps({"jsonrpc": "2.0", "id": 4, "method": method,
                                          "params": {"name": "wipe_disk"}}))
    assert response.json()["error"]["code"] == -32601
    assert recorder.bodies == []


def test_a_batch_is_refused_and_not_relayed(gateway: Gateway, recorder: RecordingServer) -> None:
    response = gateway.post(orjson.dumps([
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "wipe_disk"}}]))
    assert response.status_code == 400 and response.json()["error"]["code"] == -32600
    assert recorder.bodies == []


def test_param_headers_never_travel_beside_a_governed_call(gateway: Gateway,
                                                         recorder: RecordingServer) -> None:
    """A server may read argument values from `Mcp-Param-*` copies; the policy read the body."""
    response = gateway.post(orjson.dumps({
        "jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "hi"}}}),
        headers={"mcp-param-text": "pineapple", "mcp-method": "tools/call",
                 "mcp-name": "echo"})
    assert response.json()["result"]["content"][0]["text"] == "done"
    (request,) = recorder.received
    headers = request.headers
    assert not any(name.startswith("mcp-param-") for name in headers)
    assert "pineapple" not in orjson.dumps(headers).decode()


def test_a_hidden_tool_is_refused_when_called_and_hidden_on_every_page(
        gateway: Gateway, recorder: RecordingServer) -> None:
    listed = gateway.post(orjson.dumps({"jsonrpc": "2.0", "id": 6, "method": "tools/list",
                                        "params": {"cursor": "page-2"}})).json()
    assert [tool["name"] for tool in listed["result"]["tools"]] == ["echo"]
    assert listed["result"]["nextCursor"] == "page-3"
    called = gateway.post(orjson.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                                        "params": {"name": "wipe_disk", "arguments": {}}}))
    assert called.json()["error"]["code"] == -32001
    assert len(recorder.bodies) == 1  # only the list reached the server


@pytest.mark.parametrize("name", ["DELETE_all", "Delete_all", "delete\u200b_all",
                                  "\uff44\uff45\uff4c\uff45\uff54\uff45_all", "d\u0435lete_all"])
def test_look_alikes_of_a_tool_the_configuration_denies_are_refused(
        gateway: Gateway, recorder: RecordingServer, name: str) -> None:
    response = gateway.post(orjson.dumps({"jsonrpc": "2.0", "id": 8, "method": "tools/call",
                                          "params": {"name": name, "arguments": {}}}))
    error = response.json()["error"]
    assert error["code"] == -32001
    assert error["data"]["policy"]["reason_code"] == "TOOL_NOT_PERMITTED"
    assert recorder.bodies == []


def test_meta_cannot_carry_a_second_name(gateway: Gateway, recorder: RecordingServer) -> None:
    response = gateway.post(orjson.dumps({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                                          "params": {"name": "wipe_disk", "arguments": {},
                                                     "_meta": {"name": "echo"}}}))
    assert response.json()["error"]["code"] == -32001
    assert recorder.bodies == []


@pytest.mark.parametrize(("method", "params"), [
    ("prompts/get", {"name": "summary", "arguments": {"topic": "pineapple"}}),
    ("resources/read", {"uri": "file:///notes/pineapple.txt"}),
])
def test_prompts_and_resources_are_decided(gateway: Gateway, recorder: RecordingServer,
                                           method: str, params: dict[str, Any]) -> None:
    response = gateway.post(orjson.dumps({"jsonrpc": "2.0", "id": 10, "method": method,
                                          "params": params}))
    assert response.json()["error"]["code"] == -32001
    assert recorder.bodies == []
