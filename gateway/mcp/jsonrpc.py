"""JSON-RPC 2.0 as MCP uses it: reading one client message, and the error answers.

MCP (revision 2025-06-18 and later) sends one message per POST: a request (`method` and `id`),
a notification (`method`, no `id`) or a response to a server's request (`result` or `error`).
Batches were removed from the protocol, so a JSON array is an invalid request here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from gateway.adapters.base import JSON, Adapter
from gateway.errors import (
    GatewayError,
    McpInvalidMessage,
    McpParseError,
    McpProtocolError,
    PolicyRefused,
    RequestTooLarge,
    UpstreamError,
)
from gateway.policy.json_strings import MAX_JSON_DEPTH, json_depth

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
#: Implementation-defined server errors (JSON-RPC reserves -32000..-32099 for them).
GATEWAY_ERROR = -32000
POLICY_REFUSED = -32001
UPSTREAM_FAILED = -32002
QUOTA_EXCEEDED = -32003

#: Requests a client may send to a server (protocol revisions 2025-06-18 and 2025-11-25).
CLIENT_METHODS = frozenset({
    "initialize", "ping", "tools/list", "tools/call", "resources/list", "resources/read",
    "resources/templates/list", "resources/subscribe", "resources/unsubscribe", "prompts/list",
    "prompts/get", "completion/complete", "logging/setLevel", "tasks/get", "tasks/result",
    "tasks/list", "tasks/cancel"})


@dataclass(frozen=True, slots=True)
class Message:
    """One client message, as sent."""

    raw: JSON

    @property
    def method(self) -> str | None:
        method = self.raw.get("method")
        return method if isinstance(method, str) else None

    @property
    def id(self) -> Any:
        return self.raw.get("id")

    @property
    def is_request(self) -> bool:
        return self.method is not None and "id" in self.raw

    @property
    def params(self) -> JSON:
        params = self.raw.get("params")
        return params if isinstance(params, dict) else {}


def parse_message(body: bytes) -> Message:
    """The one JSON-RPC message in `body`, or the protocol's error for what it is instead."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise McpParseError(f"Parse error: {exc}") from None
    if isinstance(value, list):
        raise McpInvalidMessage("Invalid Request: MCP sends one JSON-RPC message per request; "
                                "batches are not supported.")
    if json_depth(value) > MAX_JSON_DEPTH:  # the gateway could not forward it again
        raise McpInvalidMessage(f"Invalid Request: the message is nested more than "
                                f"{MAX_JSON_DEPTH} levels deep.")
    if not isinstance(value, dict) or value.get("jsonrpc") != "2.0":
        raise McpInvalidMessage('Invalid Request: expected a JSON-RPC 2.0 object with '
                                '"jsonrpc": "2.0".')
    if "method" in value and not isinstance(value["method"], str):
        raise McpInvalidMessage("Invalid Request: 'method' must be a string.")
    message_id = value.get("id")
    if isinstance(message_id, bool) or not isinstance(message_id, str | int | None):
        raise McpInvalidMessage("Invalid Request: 'id' must be a string or an integer.")
    if "method" in value and "id" in value and message_id is None:
        raise McpInvalidMessage("Invalid Request: a request's 'id' must not be null.")
    if "method" not in value and "result" not in value and "error" not in value:
        raise McpInvalidMessage("Invalid Request: neither a request, a notification nor a "
                                "response.")
    return Message(value)


def check_routing_headers(headers: Mapping[str, str], message: Message) -> None:
    """The newer protocol generation repeats the method and the tool (or prompt, resource) name
    in `Mcp-Method` and `Mcp-Name` headers. A server may route on them, so on a governed route
    they must say what the body says, which is what the policy decided on."""
    method = headers.get("mcp-method")
    if method is not None and method != message.method:
        raise McpInvalidMessage("Invalid Request: the Mcp-Method header does not match the "
                                "message's method.")
    name = headers.get("mcp-name")
    named = message.params.get("uri" if message.method == "resources/read" else "name")
    if name is not None and name != named:
        raise McpInvalidMessage("Invalid Request: the Mcp-Name header does not match the "
                                "message's params.")


def rpc_code(error: GatewayError) -> int:
    """The JSON-RPC error code that stands for `error`."""
    if isinstance(error, McpProtocolError):
        return error.rpc_code
    if isinstance(error, RequestTooLarge):
        return INVALID_REQUEST
    if isinstance(error, UpstreamError):
        return UPSTREAM_FAILED
    if isinstance(error, PolicyRefused):
        return POLICY_REFUSED
    if error.code == "quota_exceeded":
        return QUOTA_EXCEEDED
    return GATEWAY_ERROR


def error_message(request_id: Any, error: GatewayError) -> JSON:
    """`error` as a JSON-RPC error response to `request_id`; `data` holds the gateway's error
    code and type, and the `policy` object when a policy was evaluated."""
    data: JSON = {"code": error.code, "type": error.error_type, **error.extra}
    return {"jsonrpc": "2.0", "id": request_id,
            "error": {"code": rpc_code(error), "message": error.message, "data": data}}


class McpWire(Adapter):
    """The error shape of the MCP routes, for the HTTP shell (gateway/http/routes.py): errors
    before a message was read (authentication, body size, bad JSON) as JSON-RPC errors with a
    null id."""

    surface: ClassVar[str] = "mcp"
    provider_kind: ClassVar[str] = "mcp"
    upstream_path: ClassVar[str] = ""
    path: ClassVar[str] = "/mcp"
    api: ClassVar[str] = "mcp"

    def error_body(self, error: GatewayError) -> JSON:
        return error_message(None, error)


MCP_WIRE = McpWire()
