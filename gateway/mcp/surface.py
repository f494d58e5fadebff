"""The MCP routes: `/mcp/NAME` (transparent) and `/policy/mcp/NAME` (governed).

Both authenticate the client with the gateway's own API keys (or JWTs); the upstream gets only
the credentials of its configuration. The transparent route relays every message and stream as
it is. The governed route also needs a Policy Gateway plan, reads each POSTed message, answers
malformed ones with the JSON-RPC error the protocol defines, governs `tools/call`,
`prompts/get` and `resources/read` (gateway/mcp/toolcall.py), filters `tools/list`,
`prompts/list`, `resources/list` and `resources/templates/list` by the policy (and tools by the
configuration: gateway/mcp/listing.py), and relays everything else: other requests answered
unchanged, notifications acknowledged, the server's stream message by message, the session's
end. Every request goes upstream under an id of the gateway's (gateway/mcp/upstream_ids.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any

import orjson
import trio

import dsl
from gateway.adapters.base import JSON
from gateway.errors import GatewayError, McpInvalidMessage, McpMethodNotFound, PolicyNotLinked
from gateway.http.wire import Inbound, Outbound, OwnedStream
from gateway.mcp.answers import (
    Rewrite,
    is_sse,
    rewritten_json,
    rewritten_sse,
    server_stream,
)
from gateway.mcp.jsonrpc import (
    CLIENT_METHODS,
    Message,
    check_routing_headers,
    error_message,
    parse_message,
)
from gateway.mcp.kinds import KINDS
from gateway.mcp.listing import LISTINGS, Listing, filter_listed
from gateway.mcp.relay import McpUpstreams, read_bounded, relayed_body, relayed_headers
from gateway.mcp.settings import McpServer
from gateway.mcp.toolcall import Resolved, ToolCall
from gateway.mcp.upstream_ids import UpstreamIds
from gateway.policy.governance import read_gateway_fields
from gateway.state import GatewayState
from gateway.surfaces.policy import PolicySurface

Handler = Callable[[Inbound], Awaitable[Outbound]]


class McpSurface:
    def __init__(self, state: GatewayState, governed: PolicySurface,
                 upstreams: McpUpstreams) -> None:
        self.state, self.governed, self.upstreams = state, governed, upstreams
        self.upstream_ids = UpstreamIds()

    def transparent(self, server: McpServer) -> Handler:
        async def handle(inbound: Inbound) -> Outbound:
            self.governed.authenticate(inbound)
            request_id = _request_id(inbound.body)
            try:
                return await self._relay(server, inbound, inbound.body)
            except GatewayError as error:
                return _in_band(request_id, error)
        return handle

    def policy(self, server: McpServer) -> Handler:
        async def handle(inbound: Inbound) -> Outbound:
            # Every request, the session's too, is resolved to a project linked to a policy,
            # with the governed surface's HTTP errors: a caller that may not use the project
            # gets no session at all, rather than a session whose calls all fail.
            caller = self.governed.require_plan(inbound)
            fields, _ = read_gateway_fields(inbound.headers, {})
            project = self.governed.resolve_project(caller, fields)
            loaded = (self.state.registry.get(project.policy_id)
                      if project.policy_id is not None else None)
            if loaded is None:
                raise PolicyNotLinked("Project is not linked to a policy")
            if inbound.method != "POST":  # the server's stream (GET) or the session's end
                # No resumption: a replayed stream could carry a tool's answer ungoverned.
                headers = {k: v for k, v in inbound.headers.items() if k != "last-event-id"}
                return await self._server_stream(server, inbound, headers)
            message = parse_message(inbound.body)
            # The server gets the message as the gateway read it: JSON parsers differ on which
            # of two equal keys wins, and the policy must decide what the server runs.
            inbound = dataclasses.replace(inbound, body=orjson.dumps(message.raw))
            try:
                return await self._governed(server, Resolved(caller, fields, project, loaded),
                                            inbound, message)
            except GatewayError as error:
                if not message.is_request:
                    raise
                return _in_band(message.id, error)
        return handle

    async def _governed(self, server: McpServer, resolved: Resolved, inbound: Inbound,
                        message: Message) -> Outbound:
        method = message.method
        if method is not None and not message.is_request and not method.startswith(
                "notifications/"):
            # A request without an id would be run upstream with no answer to govern.
            raise McpInvalidMessage(f"Invalid Request: {method!r} needs an 'id'.")
        if message.is_request and method not in CLIENT_METHODS:
            raise McpMethodNotFound(f"Method not found: {method!r}.")
        check_routing_headers(inbound.headers, message)
        # The caller and its session: only its own requests are named by its cancellations.
        caller = (resolved.caller.account.id, resolved.caller.user_id, server.name)
        session = inbound.headers.get("mcp-session-id")
        if not message.is_request:
            if method == "notifications/cancelled":
                inbound = dataclasses.replace(inbound, body=orjson.dumps(
                    self.upstream_ids.cancellation(caller, session, message.raw)))
            return await self._acknowledged(server, inbound)
        upstream_id = self.upstream_ids.new(caller, session, message.id)
        if method in KINDS:
            return await ToolCall(self.state, self.upstreams, server, resolved, inbound,
                                  message, upstream_id).run()
        if method in LISTINGS:
            return await self._list(LISTINGS[method], server, resolved, inbound, message,
                                    upstream_id)
        # initialize, ping, completions...: answered, not decided
        return await self._answered(server, inbound, message, _unchanged, upstream_id)

    async def _relay(self, server: McpServer, inbound: Inbound, body: bytes) -> Outbound:
        """The upstream's answer, streamed to the client as it arrives."""
        response = await self.upstreams.open(server, inbound.method, inbound.headers, body)
        deadline = None if inbound.method == "GET" else (
            trio.current_time() + server.total_timeout)
        return Outbound(status=response.status_code, headers=relayed_headers(response),
                        stream=OwnedStream(relayed_body(response, server, deadline),
                                           response.aclose))

    async def _server_stream(self, server: McpServer, inbound: Inbound,
                             headers: Mapping[str, str]) -> Outbound:
        """The server's own stream (GET), with its requests and notifications as the gateway
        read them, or the session's end (DELETE)."""
        response = await self.upstreams.open(server, inbound.method, headers, b"")
        if not 200 <= response.status_code < 300:  # 405 from a server without the stream
            return Outbound(status=response.status_code, headers=relayed_headers(response),
                            stream=OwnedStream(relayed_body(response, server, None),
                                               response.aclose))
        frames = server_stream(response, server) if is_sse(response) else _nothing()
        return Outbound(status=response.status_code, headers=relayed_headers(response),
                        stream=OwnedStream(frames, response.aclose))

    async def _acknowledged(self, server: McpServer, inbound: Inbound) -> Outbound:
        """A notification or a response to a server's request, relayed: the server accepts it
        (202) and sends nothing back that a client could take for an answer."""
        response = await self.upstreams.open(server, "POST", inbound.headers, inbound.body)
        headers = relayed_headers(response)
        deadline = trio.current_time() + server.total_timeout
        try:
            if not 200 <= response.status_code < 300:
                return Outbound(status=response.status_code, headers=headers,
                                body=await read_bounded(response, server, deadline))
        finally:
            await response.aclose()
        return Outbound(status=202, headers=[(k, v) for k, v in headers if k != "content-type"],
                        body=b"")

    async def _list(self, listing: Listing, server: McpServer, resolved: Resolved,
                    inbound: Inbound, message: Message, request_id: str) -> Outbound:
        """The upstream's list of tools, prompts, resources or resource templates without the
        entries the policy always refuses (enforced) for this caller, nor the tools the
        configuration denies."""
        refused = self._always_refused(listing, server, resolved)

        def rewrite(answer: dict[str, Any]) -> dict[str, Any]:
            result = answer.get("result")
            return {**answer, "result": filter_listed(listing, result, server, refused)} if (
                isinstance(result, dict)) else answer

        return await self._answered(server, inbound, message, rewrite, request_id)

    async def _answered(self, server: McpServer, inbound: Inbound, message: Message,
                        rewrite: Rewrite, request_id: str) -> Outbound:
        """The server's answer to a request, JSON or SSE, its response rewritten; it goes
        upstream under `request_id`, an id of the gateway's, so that no other message in the
        answer passes for the response (gateway/mcp/answers.py)."""
        body = orjson.dumps({**message.raw, "id": request_id})
        response = await self.upstreams.open(server, "POST", inbound.headers, body)
        headers = relayed_headers(response)
        deadline = trio.current_time() + server.total_timeout
        answered = 200 <= response.status_code < 300  # a client reads any 2xx body
        if answered and is_sse(response):
            frames = _in_band_errors(message.id, rewritten_sse(
                response, server, request_id, message.id, rewrite, deadline))
            return Outbound(status=200, headers=headers,
                            stream=OwnedStream(frames, response.aclose))
        try:
            if not answered:  # the server's HTTP error (an expired session's 404)
                return Outbound(status=response.status_code, headers=headers,
                                body=await read_bounded(response, server, deadline))
            body = await rewritten_json(response, server, request_id, message.id, rewrite,
                                        deadline)
        finally:
            await response.aclose()
        return Outbound(status=200, headers=headers, body=body)


    def _always_refused(self, listing: Listing, server: McpServer,
                        resolved: Resolved) -> Callable[[str], bool]:
        """Whether the policy refuses every request for an entry, whatever its arguments (a
        refusing rule that reads only the tool's name and server, the target, the user or the
        project fires, or the default refuses and nothing could allow it: dsl/tools.py), and
        the target's rollout stage enforces that for this caller (a shadowed or rolled-back
        refusal hides nothing)."""
        loaded, fields = resolved.loaded, resolved.fields
        policy = loaded.policy
        target = fields.target or listing.target
        subject = fields.policy_user or resolved.caller.user_id
        if not policy.tool_gate.filters or not self.state.rollouts.preview(
                loaded, target, subject)[1]:
            return lambda name: False

        def refused(name: str) -> bool:
            return dsl.policy_always_refuses_tool(policy, listing.facts(
                server, name, target=fields.target, policy_user=fields.policy_user,
                project_id=resolved.project.id))
        return refused


def _unchanged(answer: JSON) -> JSON:
    return answer


def _in_band(request_id: Any, error: GatewayError) -> Outbound:
    """A JSON-RPC error answering request `request_id`: HTTP 200, so that MCP clients hand it
    to the caller of the request rather than failing the transport (a message without an id
    gets the error's HTTP status)."""
    status = 200 if request_id is not None else error.status
    return Outbound.json(status, error_message(request_id, error), list(error.headers.items()))


async def _nothing() -> AsyncGenerator[bytes, None]:
    return
    yield  # an async generator without an item


async def _in_band_errors(request_id: Any, frames: AsyncGenerator[bytes, None]
                          ) -> AsyncGenerator[bytes, None]:
    """`frames`, and the error that ends them as the JSON-RPC error answering the request."""
    try:
        async with aclosing(frames):
            async for frame in frames:
                yield frame
    except GatewayError as error:
        yield b"data: " + orjson.dumps(error_message(request_id, error)) + b"\n\n"


def _request_id(body: bytes) -> Any:
    try:
        value = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    return value.get("id") if isinstance(value, dict) else None
