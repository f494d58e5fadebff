"""The ASGI shell of the API routes: a thin layer in front of the QuartTrio app.

Why not quart for these routes: quart's per-request machinery (request and app contexts,
signals, werkzeug header objects, response conversion) costs about 0.2 ms per request on our
machines (measured: quart-trio hello world 640 µs p50 vs. a bare ASGI app 425 µs under the same
hypercorn). That alone is the whole overhead budget of the proxy, so the six hot API routes are
dispatched here, straight to the framework-neutral surfaces; quart keeps serving everything
else (health, errors, management) and owns the app lifecycle (lifespan, `before_serving`).

What quart would have done for us and this layer does itself:
- read the body with the configured size limit (413 in the API's shape);
- cancel the handler when the client disconnects (a watcher task on `receive`, as quart-trio
  does), which closes the upstream exchange at once;
- stream the body with no response timeout: the relay applies its own idle and total timeouts.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from gateway.adapters import Adapter
from gateway.errors import GatewayError, MethodNotAllowed, RequestTooLarge
from gateway.wire import Inbound, Outbound, error_response

log = logging.getLogger("gateway")

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]],
                    Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]
Surface = Callable[[Inbound], Awaitable[Outbound]]


@dataclass(frozen=True, slots=True)
class ApiRoute:
    method: str
    path: str
    #: Renders errors in this API's shape.
    adapter: Adapter
    handler: Surface


class FastRoutes:
    """ASGI middleware: API routes here, everything else to `fallback` (the quart app)."""

    def __init__(self, fallback: ASGIApp, routes: list[ApiRoute], *, max_body_bytes: int):
        self._fallback = fallback
        self._routes: dict[str, dict[str, ApiRoute]] = {}
        for route in routes:
            self._routes.setdefault(route.path, {})[route.method] = route
        self._max_body = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        by_method = self._routes.get(scope["path"]) if scope["type"] == "http" else None
        if by_method is None:
            await self._fallback(scope, receive, send)
            return
        route = by_method.get(scope["method"])
        if route is None:
            adapter = next(iter(by_method.values())).adapter
            error = MethodNotAllowed(f"Method {scope['method']} is not allowed on {scope['path']}.")
            await _send(error_response(adapter, error), send)
            return
        try:
            inbound = await self._read_inbound(scope, receive)
        except _ClientGone:
            return
        except GatewayError as error:
            await _send(error_response(route.adapter, error), send)
            return
        # Only now may another task read `receive`: the body is consumed, so the next message
        # can only be the client going away.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            await self._serve(route, inbound, send)
            nursery.cancel_scope.cancel()

    async def _serve(self, route: ApiRoute, inbound: Inbound, send: Any) -> None:
        try:
            out = await route.handler(inbound)
        except GatewayError as error:
            out = error_response(route.adapter, error)
        except Exception:  # a bug of ours: log it, never leak a traceback (Cancelled passes)
            log.exception("unhandled error on %s %s", inbound.method, inbound.path)
            out = error_response(route.adapter,
                                 GatewayError("The gateway failed to handle this request."))
        await _send(out, send)

    async def _read_inbound(self, scope: dict[str, Any], receive: Any) -> Inbound:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            # A repeated header is one comma-separated list (RFC 9110 §5.3).
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_body:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return Inbound(method=scope["method"], path=scope["path"], headers=headers,
                       body=b"".join(chunks), query_string=scope.get("query_string", b""))

    def _too_large(self) -> RequestTooLarge:
        return RequestTooLarge(
            f"The request body is larger than the limit of {self._max_body} bytes.")


class _ClientGone(Exception):
    """The client disconnected before its request body was complete: nobody to answer."""


async def _cancel_on_disconnect(receive: Any, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def _send(out: Outbound, send: Any) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out.headers]
    if out.stream is None:
        headers.append((b"content-length", str(len(out.body)).encode()))
        await send({"type": "http.response.start", "status": out.status, "headers": headers})
        await send({"type": "http.response.body", "body": out.body, "more_body": False})
        return
    stream = out.stream
    try:
        await send({"type": "http.response.start", "status": out.status, "headers": headers})
        async for chunk in stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            with trio.CancelScope(shield=True):
                await aclose()
