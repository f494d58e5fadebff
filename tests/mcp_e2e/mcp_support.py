"""Helpers of the MCP tests: the official SDK's Streamable HTTP client session, run under
asyncio (the SDK's own loop; the gateway under test runs trio in its server thread)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx  # the mcp SDK's streamable_http_client takes an httpx.AsyncClient, not httpx2's
import httpx2
from e2e.harness import RunningGateway
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

T = TypeVar("T")
#: The gateway's `[jwt]` of the MCP tests (HS256).
JWT_SECRET = "mcp-test-jwt-secret-" + "x" * 32
JWT_AUDIENCE = "policy-gateway-mcp-tests"


@dataclass
class McpUpstream:
    url: str
    #: Where the server notes cancelled tool calls (`cancelled-TAG`).
    markers: Path


@dataclass
class McpGateway:
    gateway: RunningGateway
    keys: dict[str, str] = field(default_factory=dict)
    upstream: McpUpstream | None = None

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def state(self) -> Any:
        return self.gateway.app.extensions["gateway"]

    def events(self) -> list[dict[str, Any]]:
        return list(self.state.events.events)

    def tool_events(self, count: int = 1) -> list[dict[str, Any]]:
        """The tool call events, once there are `count` (a streamed call's event is recorded
        just after its last frame, so possibly after the client has the answer)."""
        deadline = time.monotonic() + 10
        while True:
            events = [e for e in self.events() if e.get("mcp")]
            if len(events) >= count or time.monotonic() > deadline:
                time.sleep(0.05)  # and no further one comes
                return [e for e in self.events() if e.get("mcp")]
            time.sleep(0.02)

    def session(self, path: str, work: Callable[[ClientSession], Awaitable[T]], *,
                project: str = "proj_tools", key: str | None = None,
                headers: dict[str, str] | None = None, **session_options: Any) -> T:
        """Run `work` on an initialized SDK client session against `path` of the gateway
        (`session_options` go to `ClientSession`, e.g. `logging_callback`)."""
        token = key if key is not None else self.keys[project]
        return asyncio.run(in_session(self.url + path, work, {
            "authorization": f"Bearer {token}", **(headers or {})}, session_options))


async def in_session(url: str, work: Callable[[ClientSession], Awaitable[T]],
                     headers: dict[str, str], session_options: dict[str, Any]) -> T:
    async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, read=60)) as http:
        async with streamable_http_client(url, http_client=http) as (read, write, _):
            async with ClientSession(read, write, **session_options) as session:
                await session.initialize()
                return await work(session)


def jsonrpc(gateway: McpGateway, path: str, body: Any, *, project: str = "proj_tools",
            headers: dict[str, str] | None = None, content: bytes | None = None
            ) -> httpx2.Response:
    """One raw POST, for what the SDK would never send."""
    sent = {"authorization": f"Bearer {gateway.keys[project]}",
            "accept": "application/json, text/event-stream",
            "content-type": "application/json", **(headers or {})}
    return httpx2.post(gateway.url + path, headers=sent, timeout=30,
                      content=content if content is not None else None,
                      json=body if content is None else None)
