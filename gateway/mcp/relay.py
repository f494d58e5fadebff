"""The exchange with an upstream MCP server over Streamable HTTP.

The client's transport headers (session, protocol version, accept, resumption) are relayed; its
credentials are not: the upstream gets the headers its configuration names, nothing else that
identifies the client. Response bodies (JSON or SSE) are relayed as they arrive.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing

import httpx2
import trio

from gateway.errors import GatewayError, UpstreamTimeout, UpstreamUnavailable
from gateway.mcp.settings import McpServer

log = logging.getLogger("gateway")

#: Client headers the upstream needs to keep the session and the transport going, besides every
#: `Mcp-*` header (the session, the protocol version, and the newer protocol generation's
#: `Mcp-Method`, `Mcp-Name` and `Mcp-Param-*` routing headers).
FORWARDED_REQUEST_HEADERS = ("accept", "content-type", "last-event-id")
PARAM_HEADER_PREFIX = "mcp-param-"
#: Upstream headers the client needs; nothing else of the upstream's is relayed.
RELAYED_RESPONSE_HEADERS = ("content-type", "mcp-session-id", "mcp-protocol-version",
                            "cache-control", "www-authenticate")
_RELAYED = frozenset(RELAYED_RESPONSE_HEADERS)


class McpUpstreams:
    """One connection pool for every configured MCP server, owned by the app."""

    def __init__(self, transport: httpx2.AsyncBaseTransport | None = None) -> None:
        self._client = httpx2.AsyncClient(transport=transport, trust_env=False,
                                         follow_redirects=False, timeout=None)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def open(self, server: McpServer, method: str, headers: Mapping[str, str],
                   body: bytes, *, param_headers: bool = True) -> httpx2.Response:
        """Send one request and return once the response head arrived (its body unread).
        GET opens the server's own stream, which may stay quiet for long: only the connect
        timeout applies to it. Without `param_headers`, the `Mcp-Param-*` headers (copies of
        argument values) are left out: the arguments were rewritten."""
        sent = {name: value for name, value in headers.items()
                if name in FORWARDED_REQUEST_HEADERS or (name.startswith("mcp-") and (
                    param_headers or not name.startswith(PARAM_HEADER_PREFIX)))}
        sent.update(server.headers)
        read = None if method == "GET" else server.idle_timeout
        timeout = httpx2.Timeout(connect=server.connect_timeout, read=read, write=read,
                                pool=server.connect_timeout)
        request = self._client.build_request(method, server.url, headers=sent,
                                             content=body or None, timeout=timeout)
        try:
            with trio.fail_after(server.total_timeout):
                return await self._client.send(request, stream=True)
        except (httpx2.TimeoutException, trio.TooSlowError):
            raise UpstreamTimeout(f"The MCP server {server.name!r} did not answer in time."
                                  ) from None
        except httpx2.HTTPError as exc:
            log.warning("MCP server %s unreachable: %r", server.name, exc)
            raise UpstreamUnavailable(f"The MCP server {server.name!r} is unreachable."
                                      ) from None


def relayed_headers(response: httpx2.Response) -> list[tuple[str, str]]:
    """The MCP server's headers the client gets, as latin-1 text of their bytes, so that they
    go out byte for byte whatever the server put in them."""
    named = ((name.decode("latin-1").lower(), value.decode("latin-1"))
             for name, value in response.headers.raw)
    return [(name, value) for name, value in named if name in _RELAYED]


async def body_chunks(response: httpx2.Response, server: McpServer, deadline: float | None
                      ) -> AsyncGenerator[bytes, None]:
    """The response body as it arrives; a stream quiet for longer than the idle timeout (the
    client's read timeout) or running past `deadline` (trio time) ends with UpstreamTimeout,
    a broken one with UpstreamUnavailable."""
    try:
        async for chunk in response.aiter_raw():
            if chunk:
                yield chunk
            if deadline is not None and trio.current_time() > deadline:
                raise UpstreamTimeout(f"The MCP server {server.name!r} took longer than "
                                      f"{server.total_timeout:g} s.")
    except httpx2.TimeoutException:
        raise UpstreamTimeout(f"The MCP server {server.name!r} stopped answering.") from None
    except httpx2.HTTPError as exc:
        log.warning("MCP server %s broke off its answer: %r", server.name, exc)
        raise UpstreamUnavailable(f"The MCP server {server.name!r} broke off its answer."
                                  ) from None


async def relayed_body(response: httpx2.Response, server: McpServer, deadline: float | None
                       ) -> AsyncGenerator[bytes, None]:
    """The body as it arrives; an upstream failure mid-stream ends the stream (the client's
    SDK sees the stream end without the answer and reports it)."""
    try:
        async with aclosing(body_chunks(response, server, deadline)) as chunks:
            async for chunk in chunks:
                yield chunk
    except GatewayError:
        return


#: Largest body the gateway reads whole (an answer to rewrite, an upstream's error).
MAX_READ_BYTES = 16 * 1024 * 1024


async def read_bounded(response: httpx2.Response, server: McpServer, deadline: float | None
                       ) -> bytes:
    """The whole body, at most MAX_READ_BYTES of it (a larger one is UpstreamUnavailable)."""
    chunks: list[bytes] = []
    size = 0
    async with aclosing(body_chunks(response, server, deadline)) as body:
        async for chunk in body:
            size += len(chunk)
            if size > MAX_READ_BYTES:
                raise UpstreamUnavailable(f"The MCP server {server.name!r} sent an answer "
                                          f"larger than {MAX_READ_BYTES} bytes.")
            chunks.append(chunk)
    return b"".join(chunks)
