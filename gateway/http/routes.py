"""The ASGI shell of the API routes: a thin layer in front of the QuartTrio app.

Why not quart for these routes: quart's per-request machinery (request and app contexts,
signals, werkzeug header objects, response conversion) costs about 0.2 ms per request on our
machines (measured: quart-trio hello world 640 µs p50 vs. a bare ASGI app 425 µs under the same
hypercorn). That alone is the whole overhead budget of the proxy, so the six hot API routes are
dispatched here, straight to the framework-neutral surfaces; quart keeps serving everything
else (health, errors, management) and owns the app lifecycle (lifespan, `before_serving`).

What quart would have done for us and this layer does itself:
- read the body with the configured size limit (413 in the API's shape) and within the
  whole-body deadline `[timeouts] request_body` (408: a body trickling in holds no worker);
- cancel the handler when the client disconnects (a watcher task on `receive`, as quart-trio
  does), which closes the upstream exchange at once;
- stream the body with no response timeout: the relay applies its own idle and total timeouts.

It also caps the requests one worker serves at once (`[limits] max_concurrent_requests`):
beyond it a request is answered 503 `server_busy` at once, before its body is read, so slow
clients cannot pile up without bound (probes and scrapes are exempt).

It is also where every HTTP request (API routes and the quart ones) gets its `x-request-id`,
its `RequestRecord`, its access log line and its request metrics (gateway.http.access_log,
gateway.http.metrics): a few dictionary and counter operations per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from gateway.adapters import CHAT, Adapter, endpoint_for
from gateway.errors import (
    GatewayError,
    MethodNotAllowed,
    RequestTimeout,
    RequestTooLarge,
    ServerBusy,
)
from gateway.http.access_log import (
    REQUEST_ID_HEADER,
    RequestRecord,
    bind,
    log_request,
    request_id_from,
    unbind,
)
from gateway.http.wire import Inbound, Outbound, error_response

log = logging.getLogger("gateway")
_REQUEST_ID_RAW = REQUEST_ID_HEADER.encode()
#: Probes and scrapes: logged at DEBUG and not counted, so they do not drown the real traffic.
_OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

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

    def __init__(self, fallback: ASGIApp, routes: list[ApiRoute], *, max_body_bytes: int,
                 metrics: Any = None, draining: Any = None, body_timeout: float = 30.0,
                 max_concurrent: int = 1000):
        self._fallback = fallback
        self._routes: dict[str, dict[str, ApiRoute]] = {}
        self._labels: dict[str, tuple[str, str]] = {}
        for route in routes:
            self._routes.setdefault(route.path, {})[route.method] = route
            self._labels[route.path] = route_labels(route.path)
        self._max_body = max_body_bytes
        #: `gateway.http.metrics.GatewayMetrics` and `gateway.http.draining.Draining` of the app, if any.
        self._metrics = metrics
        self._draining = draining
        self._body_timeout = body_timeout
        self._max_concurrent = max_concurrent
        #: Requests in progress on this worker (probes and scrapes not counted).
        self.active = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._fallback(scope, receive, send)
            return
        path = scope["path"]
        by_method = self._routes.get(path)
        surface, api = self._labels.get(path) or route_labels(path)
        record = RequestRecord(
            request_id=request_id_from(_client_request_id(scope)), method=scope["method"],
            path=path, surface=surface, api=api, started=time.perf_counter(),
            draining=self._draining)
        token = bind(record)
        counted = surface != "ops"
        try:
            if counted and self.active >= self._max_concurrent:
                adapter = next(iter(by_method.values())).adapter if by_method else CHAT
                await _send(error_response(adapter, ServerBusy(
                    "The gateway is serving as many requests as it is configured for; retry "
                    "shortly.", headers={"retry-after": "1"})), send, record)
                return
            if counted:
                self.active += 1
            try:
                if by_method is None:
                    await self._fallback(scope, receive, _sending_request_id(send, record))
                else:
                    await self._api(by_method, scope, receive, send, record)
            finally:
                if counted:
                    self.active -= 1
        finally:
            unbind(token)
            self._done(record)

    def _done(self, record: RequestRecord) -> None:
        duration = time.perf_counter() - record.started
        if not record.status:  # the client left before any answer
            record.status, record.outcome = 499, record.outcome or "client_disconnected"
        if record.surface == "ops":
            log_request(record, duration, level=logging.DEBUG)
            return
        if self._metrics is not None:
            self._metrics.observe(record, duration)
        log_request(record, duration)

    async def _api(self, by_method: dict[str, ApiRoute], scope: dict[str, Any], receive: Any,
                   send: Any, record: RequestRecord) -> None:
        route = by_method.get(scope["method"])
        if route is None:
            adapter = next(iter(by_method.values())).adapter
            error = MethodNotAllowed(f"Method {scope['method']} is not allowed on {scope['path']}.")
            await _send(error_response(adapter, error), send, record)
            return
        try:
            inbound = await self._read_inbound(scope, receive)
        except _ClientGone:
            return
        except GatewayError as error:
            await _send(error_response(route.adapter, error), send, record)
            return
        # Only now may another task read `receive`: the body is consumed, so the next message
        # can only be the client going away.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            await self._serve(route, inbound, send, record)
            nursery.cancel_scope.cancel()

    async def _serve(self, route: ApiRoute, inbound: Inbound, send: Any,
                     record: RequestRecord) -> None:
        try:
            out = await route.handler(inbound)
        except GatewayError as error:
            out = error_response(route.adapter, error)
        except Exception:  # a bug of ours: log it, never leak a traceback (Cancelled passes)
            log.exception("unhandled error on %s %s", inbound.method, inbound.path)
            out = error_response(route.adapter,
                                 GatewayError("The gateway failed to handle this request."))
        await _send(out, send, record, self._metrics)

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
        deadline = trio.current_time() + self._body_timeout
        while True:
            with trio.move_on_at(deadline) as waiting:
                message = await receive()
            if waiting.cancelled_caught:
                raise RequestTimeout(f"The request body did not arrive within "
                                     f"{self._body_timeout:g} seconds.")
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


def route_labels(path: str) -> tuple[str, str]:
    """(surface, api) metric labels of a path; a bounded set whatever the client sends."""
    if path in _OPS_PATHS:
        return "ops", path.lstrip("/")
    if path.startswith("/api/policy-gateway/"):
        return "management", "management"
    if path.startswith(("/mcp/", "/policy/mcp/")):
        return ("policy" if path.startswith("/policy/") else "compat"), "mcp"
    surface, endpoint = endpoint_for(path)
    return surface, endpoint.api if endpoint is not None else "unknown"


def _client_request_id(scope: dict[str, Any]) -> str | None:
    for name, value in scope["headers"]:
        if name == _REQUEST_ID_RAW or name.lower() == _REQUEST_ID_RAW:
            return str(value.decode("latin-1"))
    return None


def _sending_request_id(send: Any, record: RequestRecord) -> Any:
    """`send` that adds the request id to the response head and notes the status."""
    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            record.status = message["status"]
            message = {**message, "headers": [
                *message.get("headers", ()),
                (_REQUEST_ID_RAW, record.request_id.encode("latin-1"))]}
        await send(message)
    return sending


def _head(out: Outbound, record: RequestRecord) -> list[tuple[bytes, bytes]]:
    headers = []
    for name, value in out.headers:
        if name.lower() == REQUEST_ID_HEADER:  # the upstream's own id, kept under another name
            name = "x-upstream-request-id"
        headers.append((name.encode("latin-1"), value.encode("latin-1")))
    headers.append((_REQUEST_ID_RAW, record.request_id.encode("latin-1")))
    return headers


async def _send(out: Outbound, send: Any, record: RequestRecord, metrics: Any = None) -> None:
    record.status = out.status
    if out.stream is not None:
        await _send_stream(out, out.stream, send, record, metrics)
        return
    headers = _head(out, record)
    headers.append((b"content-length", str(len(out.body)).encode()))
    await send({"type": "http.response.start", "status": out.status, "headers": headers})
    await send({"type": "http.response.body", "body": out.body, "more_body": False})


async def _send_stream(out: Outbound, stream: Any, send: Any, record: RequestRecord,
                       metrics: Any) -> None:
    """The streamed answer; the stream (and the upstream exchange it owns) is closed however
    this ends, a head that cannot be sent included."""
    record.stream = True
    gauge = None
    try:
        headers = _head(out, record)
        if metrics is not None:
            gauge = metrics.active_streams.labels(record.surface, record.api)
            gauge.inc()
        await send({"type": "http.response.start", "status": out.status, "headers": headers})
        # An `OwnedStream`'s frames directly: its `__anext__` would only forward each batch.
        frames = getattr(stream, "frames", stream)
        # A message per batch: a server may keep the messages it is given (test servers do).
        async for chunk in frames:  # the first batch alone, to note the time to first byte
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            record.first_byte_seconds = time.perf_counter() - record.started
            break
        async for chunk in frames:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        if gauge is not None:
            gauge.dec()
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            with trio.CancelScope(shield=True):
                await aclose()
