"""The MCP surface's pure parts: `[mcp.servers]` settings, JSON-RPC parsing and error codes,
tool facts and the rewrites of arguments, results and tool lists."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

import dsl
from gateway.config import Config, ConfigError
from gateway.errors import (
    McpInvalidMessage,
    McpInvalidParams,
    McpParseError,
    PolicyRefused,
    QuotaExceeded,
    RequestTooLarge,
    UpstreamTimeout,
)
from gateway.mcp.jsonrpc import check_routing_headers, error_message, parse_message, rpc_code
from gateway.mcp.listing import filter_tools
from gateway.mcp.relay import McpUpstreams
from gateway.mcp.settings import McpServer, mcp_servers
from gateway.mcp.tools import (
    error_with_policy,
    holding_result,
    redact_result,
    result_text,
    tool_call_params,
    tool_facts,
    with_policy,
)
from gateway.mcp.upstream_ids import UpstreamIds


def test_servers_read_headers_from_the_environment_and_validate() -> None:
    servers = mcp_servers({"servers": {"github": {
        "url": "https://mcp.example.com/mcp", "headers_env": {"Authorization": "GH_MCP"},
        "idle_timeout": 5, "denied_tools": ["delete_*"]}}}, {"GH_MCP": "Bearer s3cret"})
    github = servers["github"]
    assert github.headers == (("authorization", "Bearer s3cret"),)
    assert github.idle_timeout == 5.0 and github.total_timeout == 300.0
    for bad, words in [
        ({"url": "ftp://x"}, "url"),
        ({"url": "http://x", "headers_env": {"a": "MISSING"}}, "not set"),
        ({"url": "http://x", "headers": {"Mcp-Session-Id": "x"}}, "sets"),
        ({"url": "http://x", "idle_timeout": 0}, "positive"),
        ({"url": "http://x", "allowed_tools": "echo"}, "globs"),
        ({"url": "http://x", "token": "x"}, "unknown"),
    ]:
        with pytest.raises(ValueError, match=words):
            mcp_servers({"servers": {"s": bad}}, {})
    with pytest.raises(ConfigError, match="server name"):
        Config.from_mapping({"mcp": {"servers": {"a/b": {"url": "http://x"}}}}, env={})


def test_tool_permission_globs_deny_wins() -> None:
    server = McpServer("s", "http://x", allowed_tools=("read_*", "search"),
                       denied_tools=("read_secrets",))
    assert server.tool_permitted("read_file") and server.tool_permitted("search")
    assert not server.tool_permitted("read_secrets") and not server.tool_permitted("write")
    assert McpServer("s", "http://x").tool_permitted("anything")


@pytest.mark.parametrize(("body", "error"), [
    (b"{", McpParseError), (b"[]", McpInvalidMessage), (b"{}", McpInvalidMessage),
    (b'{"jsonrpc": "2.0", "id": [1], "method": "ping"}', McpInvalidMessage),
    (b'{"jsonrpc": "2.0", "id": 1, "method": 5}', McpInvalidMessage),
    (b'{"jsonrpc": "1.0", "id": 1, "method": "ping"}', McpInvalidMessage),
])
def test_malformed_messages(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_message(body)


def test_messages_and_error_codes() -> None:
    request = parse_message(b'{"jsonrpc": "2.0", "id": "x", "method": "tools/call"}')
    assert request.is_request and request.params == {}
    note = parse_message(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')
    assert not note.is_request
    assert not parse_message(b'{"jsonrpc": "2.0", "id": 3, "result": {}}').is_request
    assert rpc_code(McpParseError("x")) == -32700
    assert rpc_code(RequestTooLarge("x")) == -32600
    assert rpc_code(UpstreamTimeout("x")) == -32002
    assert rpc_code(PolicyRefused("x")) == -32001
    assert rpc_code(QuotaExceeded("x")) == -32003
    answer = error_message(4, PolicyRefused("no", extra={"policy": {"decision": "refuse"}}))
    assert answer == {"jsonrpc": "2.0", "id": 4, "error": {
        "code": -32001, "message": "no", "data": {
            "code": "policy_refused", "type": "permission_error",
            "policy": {"decision": "refuse"}}}}


def test_tool_facts_put_name_and_arguments_in_input() -> None:
    name, arguments = tool_call_params({"name": "run", "arguments": {"cmd": "ls ü"}})
    facts = tool_facts(McpServer("s", "http://x"), name, arguments, target=None,
                       policy_user="u", project_id="p")
    assert facts.input_text == 'run\n{"cmd":"ls ü"}' and facts.effective_target == "mcp_tool"
    assert facts.surface == "mcp" and facts.model == "mcp:s"
    assert tool_call_params({"name": "t", "arguments": None}) == ("t", {})
    for bad in ({}, {"name": ""}, {"name": "t", "arguments": [1]},
                {"name": "t", "arguments": {}, "task": {"ttl": 60000}}):
        with pytest.raises(McpInvalidParams):
            tool_call_params(bad)


def test_result_rewrites() -> None:
    result = {"content": [{"type": "text", "text": "mail a@example.com"},
                          {"type": "image", "data": "AAAA", "mimeType": "image/png"}],
              "structuredContent": {"result": "mail a@example.com"}, "isError": False}
    assert result_text(result) == 'mail a@example.com\n{"result":"mail a@example.com"}'
    redacted = redact_result(result, dsl.Redactor(frozenset({"email"})))
    assert redacted["content"][0]["text"] == "mail [REDACTED:EMAIL]"
    assert redacted["content"][1] == result["content"][1]
    assert redacted["structuredContent"] == {"result": "mail [REDACTED:EMAIL]"}
    # An embedded resource's text is text too; a base64 payload is not.
    embedded = {"content": [{"type": "resource", "resource": {
        "uri": "file:///c.txt", "mimeType": "text/plain", "text": "b@example.com"}},
        {"type": "image", "data": "b@example.com", "mimeType": "image/png"}]}
    assert result_text(embedded) == "file:///c.txt\nb@example.com"
    cleaned = redact_result(embedded, dsl.Redactor(frozenset({"email"})))
    assert cleaned["content"][0]["resource"]["text"] == "[REDACTED:EMAIL]"
    assert cleaned["content"][1]["data"] == "b@example.com"
    assert with_policy({"_meta": {"k": 1}}, {"d": 1}) == {"_meta": {"k": 1, "policy": {"d": 1}}}
    assert holding_result(None)["isError"] is True
    policy = {"decision": "allow"}
    assert error_with_policy({"code": 1, "message": "m"}, policy)["data"] == {"policy": policy}
    assert error_with_policy({"code": 1, "data": {"k": 2}}, policy)["data"] == {
        "k": 2, "policy": policy}
    assert error_with_policy({"code": 1, "data": "x"}, policy)["data"] == "x"


def test_tools_list_filter_drops_denied_and_malformed_tools() -> None:
    server = McpServer("s", "http://x", denied_tools=("delete_*",))
    listed = {"tools": [{"name": "echo"}, {"name": "delete_all"}, {"title": "no name"}, 7],
              "nextCursor": "c"}
    assert filter_tools(listed, server) == {"tools": [{"name": "echo"}], "nextCursor": "c"}


def test_routing_headers_must_match_the_body() -> None:
    call = parse_message(b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", '
                         b'"params": {"name": "echo"}}')
    check_routing_headers({"mcp-method": "tools/call", "mcp-name": "echo"}, call)
    check_routing_headers({}, call)
    for headers in ({"mcp-method": "tools/list"}, {"mcp-name": "delete_records"}):
        with pytest.raises(McpInvalidMessage):
            check_routing_headers(headers, call)


async def test_upstream_gets_its_credentials_and_the_transport_headers_only() -> None:
    seen: list[httpx2.Headers] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.headers)
        return httpx2.Response(200, json={"jsonrpc": "2.0", "id": 1, "result": {}})

    upstreams = McpUpstreams(transport=httpx2.MockTransport(answer))
    server = McpServer("s", "http://mcp.test/mcp", headers=(("authorization", "Bearer up"),))
    client = {"authorization": "Bearer gateway-key", "cookie": "c=1", "x-policy-user": "u",
              "accept": "application/json, text/event-stream", "mcp-session-id": "abc",
              "mcp-name": "echo", "mcp-param-region": "eu", "content-type": "application/json"}
    try:
        for param_headers in (True, False):
            response = await upstreams.open(server, "POST", client, b"{}",
                                            param_headers=param_headers)
            await response.aclose()
    finally:
        await upstreams.aclose()
    kept, rewritten = seen
    assert kept["authorization"] == "Bearer up"
    assert "cookie" not in kept and "x-policy-user" not in kept
    assert kept["mcp-session-id"] == "abc" and kept["mcp-name"] == "echo"
    assert kept["mcp-param-region"] == "eu" and "mcp-param-region" not in rewritten


def test_upstream_ids_map_a_cancellation_only_for_its_owner() -> None:
    ids = UpstreamIds(remembered=2)
    first = ids.new("alice", "s1", 7)
    assert first.startswith("gateway-") and ids.new("alice", "s1", 8) != first
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled",
              "params": {"requestId": 7, "reason": "stop"}}
    assert ids.cancellation("alice", "s1", cancel)["params"] == {"requestId": first,
                                                                 "reason": "stop"}
    assert ids.cancellation("mallory", "s1", cancel) == cancel  # not hers: goes as it came
    assert ids.cancellation("alice", "s2", cancel) == cancel  # another session's
    assert ids.cancellation("alice", "s1", cancel | {"params": {"requestId": "7"}}) == (
        cancel | {"params": {"requestId": "7"}})  # the string "7" is another id
    assert ids.cancellation("alice", "s1", {"jsonrpc": "2.0", "method": "notifications/cancelled"}
                            ) == {"jsonrpc": "2.0", "method": "notifications/cancelled"}
    ids.new("bob", None, 1)  # the oldest is forgotten
    assert ids.cancellation("alice", "s1", cancel) == cancel


def test_upstream_ids_hold_a_digest_of_any_id_and_bound_each_caller() -> None:
    ids = UpstreamIds(remembered=8, per_caller=3)
    huge = "x" * 1_000_000
    upstream = ids.new("alice", None, huge)
    assert all(len(key) == 16 for entries in ids._by_caller.values() for key in entries)
    assert ids.cancellation("alice", None, _cancel(huge))["params"]["requestId"] == upstream
    bob = [ids.new("bob", None, number) for number in range(3)]
    for number in range(100):  # a busy caller forgets its own requests, not anyone else's
        ids.new("mallory", "s", number)
    assert len(ids) == 7
    assert ids.cancellation("alice", None, _cancel(huge))["params"]["requestId"] == upstream
    assert [ids.cancellation("bob", None, _cancel(number))["params"]["requestId"]
            for number in range(3)] == bob
    assert ids.cancellation("mallory", "s", _cancel(96)) == _cancel(96)
    assert ids.cancellation("mallory", "s", _cancel(97))["params"]["requestId"] != 97
    for number in range(5):  # the overall bound: the oldest entries of all go first
        ids.new(f"caller{number}", None, 0)
    assert len(ids) == 8 and ids.cancellation("alice", None, _cancel(huge)) == _cancel(huge)


@pytest.mark.parametrize("request_id", [[1], {}, True, 1.5, None])
def test_a_cancellation_naming_no_possible_request_is_invalid_params(request_id: Any) -> None:
    ids = UpstreamIds()
    ids.new("alice", None, 1)
    with pytest.raises(McpInvalidParams):
        ids.cancellation("alice", None, _cancel(request_id))


def _cancel(request_id: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": request_id}}
