"""Bad input on `/policy/mcp/NAME`: the JSON-RPC error the protocol defines, never a 500; a dead
or hanging upstream gives a JSON-RPC error and an event; a client that leaves mid-call cancels
the upstream's tool."""

from __future__ import annotations

import time
from typing import Any

import httpx2
import pytest
from mcp_support import McpGateway, jsonrpc

pytestmark = pytest.mark.slow
GOVERNED = "/policy/mcp/tools"
PROTOCOL = "2025-11-25"


def _call(name: str, arguments: dict[str, Any], request_id: int = 7) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": name, "arguments": arguments}}


@pytest.mark.parametrize(("content", "status", "code"), [
    (b'{"jsonrpc": "2.0", "id": 1, "method": ', 400, -32700),
    (b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]', 400, -32600),
    (b'{"id": 1, "method": "ping"}', 400, -32600),
    (b'{"jsonrpc": "2.0", "id": true, "method": "ping"}', 400, -32600),
    (b'"just a string"', 400, -32600),
    *((b'{"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": '
       + request_id + b'}}', 400, -32602) for request_id in (b'[1]', b'{}', b'true', b'1.5')),
])
def test_malformed_messages_get_the_protocol_error(mcp_gateway: McpGateway, content: bytes,
                                                   status: int, code: int) -> None:
    response = jsonrpc(mcp_gateway, GOVERNED, None, content=content)
    assert response.status_code == status
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["id"] is None
    assert body["error"]["code"] == code


def test_unknown_method_is_method_not_found(mcp_gateway: McpGateway) -> None:
    response = jsonrpc(mcp_gateway, GOVERNED,
                       {"jsonrpc": "2.0", "id": "a1", "method": "tools/destroy"})
    assert response.status_code == 200
    assert response.json()["id"] == "a1"
    assert response.json()["error"]["code"] == -32601


def test_tool_call_without_name_is_invalid_params(mcp_gateway: McpGateway) -> None:
    response = jsonrpc(mcp_gateway, GOVERNED, {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                               "params": {"arguments": []}})
    assert response.json()["error"]["code"] == -32602 and response.json()["id"] == 3


def test_huge_message_is_refused_before_reading_it(mcp_gateway: McpGateway) -> None:
    limit = mcp_gateway.state.config.max_body_bytes
    response = jsonrpc(mcp_gateway, GOVERNED, _call("echo", {"text": "x" * (limit + 1)}))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == -32600


def test_no_gateway_key_is_refused_and_never_reaches_the_upstream(
        mcp_gateway: McpGateway) -> None:
    for path in (GOVERNED, "/mcp/tools"):
        response = httpx2.post(mcp_gateway.url + path, json=_call("echo", {"text": "x"}),
                              headers={"authorization": "Bearer upstream-mcp-secret"})
        assert response.status_code == 401
        assert response.json()["error"]["data"]["code"] == "invalid_api_key"


@pytest.mark.parametrize(("server", "words"), [("down", "unreachable"),
                                               ("hanging", "did not answer in time")])
def test_dead_upstream_is_a_jsonrpc_error_with_an_event(mcp_gateway: McpGateway, server: str,
                                                        words: str) -> None:
    started = time.monotonic()
    response = jsonrpc(mcp_gateway, f"/policy/mcp/{server}", _call("echo", {"text": "x"}))
    assert time.monotonic() - started < 10
    assert response.status_code == 200
    error = response.json()["error"]
    assert error["code"] == -32002 and words in error["message"]
    (event,) = mcp_gateway.tool_events()
    assert event["mcp"]["server"] == server and event["outcome"] == "upstream_error"
    assert event["status"] in (502, 504)


def _initialized_session(gateway: McpGateway) -> dict[str, str]:
    headers = {"mcp-protocol-version": PROTOCOL}
    response = jsonrpc(gateway, GOVERNED, {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                   "clientInfo": {"name": "raw-test", "version": "0"}}}, headers=headers)
    assert response.status_code == 200
    headers["mcp-session-id"] = response.headers["mcp-session-id"]
    done = jsonrpc(gateway, GOVERNED, {"jsonrpc": "2.0", "method": "notifications/initialized"},
                   headers=headers)
    assert done.status_code == 202
    return headers


def test_client_leaving_mid_call_cancels_the_upstream_tool(mcp_gateway: McpGateway) -> None:
    assert mcp_gateway.upstream is not None
    marker = mcp_gateway.upstream.markers / "cancelled-left"
    headers = _initialized_session(mcp_gateway)
    sent = {"authorization": f"Bearer {mcp_gateway.keys['proj_tools']}",
            "accept": "application/json, text/event-stream", **headers}
    with httpx2.stream("POST", mcp_gateway.url + GOVERNED, headers=sent, timeout=10,
                      json=_call("slow", {"seconds": 30, "tag": "left"})) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
    # The connection is closed: the gateway tells the upstream, which stops the tool.
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists()
    (event,) = mcp_gateway.tool_events()
    assert event["outcome"] == "client_disconnected" and event["tool"] == {"name": "slow"}


def test_a_cancellation_under_the_clients_id_stops_the_upstream_tool(
        mcp_gateway: McpGateway) -> None:
    """The call went upstream under an id of the gateway's; the client's cancellation names
    its own, and the gateway puts the upstream one in. Another caller's cancellation of the
    same id (another key, the same session) names nothing."""
    assert mcp_gateway.upstream is not None
    marker = mcp_gateway.upstream.markers / "cancelled-asked"
    headers = _initialized_session(mcp_gateway)
    sent = {"authorization": f"Bearer {mcp_gateway.keys['proj_tools']}",
            "accept": "application/json, text/event-stream", **headers}
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled",
              "params": {"requestId": 41, "reason": "user pressed stop"}}
    with httpx2.stream("POST", mcp_gateway.url + GOVERNED, headers=sent, timeout=30,
                      json=_call("slow", {"seconds": 20, "tag": "asked"}, 41)) as response:
        assert response.status_code == 200
        other = jsonrpc(mcp_gateway, GOVERNED, cancel, project="proj_quota", headers=headers)
        assert other.status_code == 202
        time.sleep(0.5)
        assert not marker.exists()  # another caller cannot cancel the call
        assert jsonrpc(mcp_gateway, GOVERNED, cancel, headers=headers).status_code == 202
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists()


def test_tool_call_without_id_is_refused_not_run(mcp_gateway: McpGateway) -> None:
    note = {"jsonrpc": "2.0", "method": "tools/call",
            "params": {"name": "delete_records", "arguments": {"table": "t"}}}
    response = jsonrpc(mcp_gateway, GOVERNED, note)
    assert response.status_code == 400 and response.json()["error"]["code"] == -32600


@pytest.mark.parametrize(("who", "status", "code"), [
    ("other_account", 403, "project_forbidden"),
    ("free_plan", 403, "policy_gateway_plan_required"),
    ("unbound", 400, "project_required"),
])
def test_callers_who_may_not_use_the_project_get_no_session(
        mcp_gateway: McpGateway, who: str, status: int, code: str) -> None:
    store, own = mcp_gateway.gateway.store, mcp_gateway.gateway.account
    if who == "other_account":
        key = store.create_key(store.create_account("other", "control").id)[1]
    elif who == "free_plan":
        key = store.create_key(store.create_account("cheap", "free").id)[1]
    else:
        key = store.create_key(own.id)[1]
    headers = {"authorization": f"Bearer {key}",
               "accept": "application/json, text/event-stream"}
    if who != "unbound":
        headers["x-policy-project"] = "proj_tools"
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                       "clientInfo": {"name": "raw-test", "version": "0"}}}
    for body in (init, _call("echo", {"text": "x"})):
        response = httpx2.post(mcp_gateway.url + GOVERNED, json=body, headers=headers)
        assert response.status_code == status
        assert response.json()["error"]["data"]["code"] == code
    assert mcp_gateway.tool_events(count=0) == []


def test_client_leaving_before_the_upstream_answers_still_records_one_event(
        mcp_gateway: McpGateway) -> None:
    sent = {"authorization": f"Bearer {mcp_gateway.keys['proj_tools']}",
            "accept": "application/json, text/event-stream"}
    with pytest.raises(httpx2.ReadTimeout):
        httpx2.post(mcp_gateway.url + "/policy/mcp/hanging", headers=sent,
                   json=_call("echo", {"text": "x"}), timeout=httpx2.Timeout(5, read=0.2))
    (event,) = mcp_gateway.tool_events()
    assert event["outcome"] in ("client_disconnected", "upstream_error")
    assert event["mcp"]["server"] == "hanging" and event["tool"] == {"name": "echo"}
