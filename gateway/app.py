"""The app factory: `create_app(config)` builds a QuartTrio app with no import-time globals.

The API routes (`/v1/*`, later `/policy/*`) are served by `gateway.http.routes.FastRoutes` in front
of quart; quart serves health, errors and management and runs the app lifecycle. Every
`GatewayError` becomes the adapter's error shape; anything else is logged and answered with a
clean 500 body, never a traceback.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import trio
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException

from gateway.adapters import ENDPOINTS, Endpoint, adapter_for
from gateway.admin.common import internal_error
from gateway.admin.history import PATH as HISTORY_PATH
from gateway.admin.history import HistoryReader
from gateway.admin.openapi import register as register_openapi
from gateway.admin.readiness import database_identity
from gateway.admin.reload import PolicyReloader
from gateway.admin.routes import register as register_management
from gateway.config import Config
from gateway.datadir import prepare_policies_dir
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    RequestTimeout,
    RequestTooLarge,
)
from gateway.http.draining import Draining
from gateway.http.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.http.metrics import PATH as METRICS_PATH
from gateway.http.metrics import GatewayMetrics
from gateway.http.routes import ApiRoute, FastRoutes
from gateway.http.wire import Inbound, Outbound, error_response
from gateway.mcp.jsonrpc import MCP_WIRE
from gateway.mcp.relay import McpUpstreams
from gateway.mcp.surface import McpSurface
from gateway.moderation.metrics import PrometheusObserver
from gateway.state import GatewayState
from gateway.surfaces import v1 as compat
from gateway.surfaces.policy import PolicySurface

log = logging.getLogger("gateway")



def create_app(config: Config | None = None, *,
               echo_transport: httpx2.AsyncBaseTransport | None = None,
               transport: httpx2.AsyncBaseTransport | None = None) -> QuartTrio:
    """The gateway app. `transport` replaces the network towards providers (an
    `httpx2.MockTransport` in tests), `echo_transport` the built-in echo upstream."""
    config = config or Config.load(None)
    app = QuartTrio("gateway")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    # Streams set `response.timeout = None` and enforce our own idle/total timeouts instead;
    # this bound only applies to plain responses, which never take longer than the upstream.
    app.config["RESPONSE_TIMEOUT"] = config.timeouts.total + 30
    # Management bodies get the same whole-body deadline as the API routes (FastRoutes).
    app.config["BODY_TIMEOUT"] = config.timeouts.request_body
    prepare_policies_dir(config)  # the default one starts with the example policies
    state = GatewayState(config, echo_transport=echo_transport, transport=transport)
    app.extensions["gateway"] = state
    reloader = register_management(app, state)
    state.reloader = reloader
    register_openapi(app)
    metrics = GatewayMetrics()
    app.extensions["metrics"] = metrics
    state.moderator.observer = PrometheusObserver(metrics.registry)
    # Told by the serving worker when shutdown begins (gateway/http/draining.py).
    draining = app.extensions["draining"] = Draining()
    reloader.listeners.append(metrics.policy_reloaded)
    history = HistoryReader(config.database_path, state)
    mcp_upstreams = McpUpstreams(transport=transport)
    _serve_lifespan(app, state, reloader, metrics, history, mcp_upstreams)
    _register_quart_routes(app, state, metrics, history)
    # The hot API routes bypass quart's per-request machinery (see gateway/http/routes.py).
    app.asgi_app = FastRoutes(  # type: ignore[method-assign,assignment]
        app.asgi_app,  # type: ignore[arg-type]
        _api_routes(state) + _mcp_routes(state, mcp_upstreams),
        max_body_bytes=config.max_body_bytes,
        metrics=metrics, draining=draining, body_timeout=config.timeouts.request_body,
        max_concurrent=config.max_concurrent_requests)
    return app


def _serve_lifespan(app: QuartTrio, state: GatewayState, reloader: PolicyReloader,
                    metrics: GatewayMetrics, history: HistoryReader,
                    mcp_upstreams: McpUpstreams) -> None:
    """Open the state and start the background tasks before serving; write what is queued and
    close everything after."""
    # The long-running tasks (event writer, reloader, metrics, connectors) run in a scope of
    # their own that `_close` cancels once the queue is written: quart would otherwise wait
    # BACKGROUND_TASK_SHUTDOWN_TIMEOUT (5 s) for loops that never end by themselves.
    background = trio.CancelScope()
    background_done = trio.Event()

    async def run_background(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                             ) -> None:
        try:
            await _run_background_tasks(background, task_status)
        finally:
            # Tasks clean up when cancelled (a connector releases its lease); the database
            # they use is closed only after that (`_close` waits for this).
            background_done.set()

    async def _run_background_tasks(scope: trio.CancelScope, task_status: Any) -> None:
        with scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(state.event_writer.run)
                await nursery.start(reloader.run)  # policies directory hot reload
                await nursery.start(metrics.run_sync, state)
                for connector in state.connectors:  # each its own task: one slow one delays
                    await nursery.start(connector.run)  # no other
                for task in state.shared_state_tasks():  # rollout windows summed in Redis
                    await nursery.start(task)
                task_status.started()

    @app.before_serving
    async def _open() -> None:
        await state.open()
        state.nursery = app.nursery
        await app.nursery.start(run_background)
        # /readyz checks that the file at the path is still the one opened here.
        app.extensions["database_identity"] = database_identity(state.config.database_path)
        log_startup(state.config, state.registry)

    @app.after_serving
    async def _close() -> None:
        # Every request has finished by now (hypercorn serves no more): write what is queued.
        await state.event_writer.drain()
        for connector in state.connectors:
            connector.stop()
        background.cancel()
        with trio.move_on_after(5):
            await background_done.wait()
        history.close()
        await mcp_upstreams.aclose()
        await state.aclose()


def _register_quart_routes(app: QuartTrio, state: GatewayState, metrics: GatewayMetrics,
                           history: HistoryReader) -> None:
    """History, health, metrics, and the error shape of everything quart answers itself."""

    @app.get(HISTORY_PATH)
    async def policy_history() -> Response:
        params = {name: request.args.getlist(name) for name in request.args}
        return _to_quart(await history.respond(request.headers, params))

    @app.get("/healthz")
    async def healthz() -> Response:
        return _to_quart(Outbound.json(200, {"status": "ok"}))

    @app.get(METRICS_PATH)
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(state), status=200,
                        headers={"content-type": METRICS_CONTENT_TYPE})

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        return _to_quart(error_response(adapter_for(request.path), _wrapped(error)))


def _wrapped(error: HTTPException) -> GatewayError:
    """A werkzeug error as ours: its status kept, a bug of ours a 500, never a 404."""
    if error.code == 405:
        return MethodNotAllowed(f"Method {request.method} is not allowed on {request.path}.")
    if error.code == 413:
        return RequestTooLarge("The request body is larger than the configured limit.")
    if error.code == 404:
        return NotFound(f"Unknown path {request.method} {request.path}.")
    if error.code == 408:
        return RequestTimeout("The request body was not received in time.")
    if error.code is not None and 400 <= error.code < 500:
        return InvalidRequest(f"The request is invalid: {error.description}")
    return internal_error(f"{request.method} {request.path}")


def _api_routes(state: GatewayState) -> list[ApiRoute]:
    """The hot API routes, one per endpoint and surface prefix (gateway/adapters ENDPOINTS)."""
    governed = PolicySurface(state)
    routes: list[ApiRoute] = []
    for endpoint in ENDPOINTS:
        adapter, path = endpoint.adapter, endpoint.path
        if endpoint.api == "simulate":
            routes.append(ApiRoute("POST", "/policy" + path, adapter, governed.simulate))
            continue
        method = "GET" if endpoint.api == "models" else "POST"
        routes.append(ApiRoute(method, "/v1" + path, adapter, _compat(state, endpoint)))
        for prefix in ("/policy", "/policy/v1"):
            routes.append(ApiRoute(method, prefix + path, adapter,
                                   _governed(state, governed, endpoint)))
    return routes


def _mcp_routes(state: GatewayState, upstreams: McpUpstreams) -> list[ApiRoute]:
    """`/mcp/NAME` and `/policy/mcp/NAME` of each configured MCP server (docs/mcp.md)."""
    surface = McpSurface(state, PolicySurface(state), upstreams)
    routes: list[ApiRoute] = []
    for name, server in state.config.mcp_servers.items():
        transparent, governed = surface.transparent(server), surface.policy(server)
        for method in ("POST", "GET", "DELETE"):
            routes.append(ApiRoute(method, f"/mcp/{name}", MCP_WIRE, transparent))
            routes.append(ApiRoute(method, f"/policy/mcp/{name}", MCP_WIRE, governed))
    return routes


def _compat(state: GatewayState, endpoint: Endpoint) -> Callable[[Inbound], Awaitable[Outbound]]:
    if endpoint.api == "models":
        return lambda inbound: compat.proxy_models(state, inbound)
    return lambda inbound: compat.proxy_api(state, endpoint.adapter, inbound)


def _governed(state: GatewayState, governed: PolicySurface, endpoint: Endpoint
              ) -> Callable[[Inbound], Awaitable[Outbound]]:
    """The governed handler; models and count_tokens pass through for Policy Gateway plans."""
    if endpoint.api == "models":
        async def models(inbound: Inbound) -> Outbound:
            governed.require_plan(inbound)
            return await compat.proxy_models(state, inbound, authenticated=True)
        return models
    if endpoint.api == "count_tokens":
        async def count_tokens(inbound: Inbound) -> Outbound:
            governed.require_plan(inbound)
            return await compat.proxy_api(state, endpoint.adapter, inbound, authenticated=True)
        return count_tokens
    return lambda inbound: governed.handle(endpoint.adapter, inbound)
def log_startup(config: Config, registry: Any) -> None:
    """One line each: the database, the policies in force, and every provider with its routes."""
    log.info("database %s", os.path.abspath(config.database_path))
    if config.postgres is not None:
        log.info("identity and policies in PostgreSQL at %s", config.postgres.where)
    loaded = sorted(f"{p.policy_id}@{p.revision}" for p in registry.policies.values())
    log.info("policies from %s: %s%s", os.path.abspath(config.policies_dir),
             ", ".join(loaded) or "none",
             f"; {len(registry.errors)} file(s) failing their check" if registry.errors else "")
    for provider in config.providers.values():
        routes = [r.model for r in config.routes if r.provider == provider.name]
        default = [kind for kind, name in config.default_provider.items() if name == provider.name]
        upstream = ("the built-in echo upstream (no API key)" if provider.is_echo
                    else _without_userinfo(provider.base_url))
        log.info("provider %s (%s) -> %s; routes: %s", provider.name, provider.kind, upstream,
                 ", ".join(routes + [f"default for {kind}" for kind in default]) or "none")


def _without_userinfo(url: str) -> str:
    """`url` fit for a log line: credentials written into it (`https://user:pass@host`) hidden."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def _to_quart(out: Outbound) -> Response:
    if out.stream is not None:
        response = Response(out.stream, status=out.status, headers=Headers(out.headers))
        # Quart would cut the stream at RESPONSE_TIMEOUT; the relay applies its own timeouts.
        response.timeout = None
        return response
    return Response(out.body, status=out.status, headers=Headers(out.headers))
