"""The app factory: `create_app(config)` builds a QuartTrio app with no import-time globals.

The API routes (`/v1/*`, later `/policy/*`) are served by `gateway.http.routes.FastRoutes` in front
of quart; quart serves health, errors and management and runs the app lifecycle. Every
`GatewayError` becomes the adapter's error shape; anything else is logged and answered with a
clean 500 body, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import httpx
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException

from gateway.adapters import CHAT, COUNT_TOKENS, MESSAGES, RESPONSES, Adapter
from gateway.admin.history import PATH as HISTORY_PATH
from gateway.admin.history import HistoryReader
from gateway.admin.openapi import register as register_openapi
from gateway.admin.routes import database_identity
from gateway.admin.routes import register as register_management
from gateway.config import Config
from gateway.errors import GatewayError, MethodNotAllowed, NotFound, RequestTooLarge
from gateway.http.draining import Draining
from gateway.http.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.http.metrics import PATH as METRICS_PATH
from gateway.http.metrics import GatewayMetrics
from gateway.http.routes import ApiRoute, FastRoutes
from gateway.http.wire import Inbound, Outbound, error_response
from gateway.state import GatewayState
from gateway.surfaces import v1 as compat
from gateway.surfaces.policy import PolicySurface

log = logging.getLogger("gateway")



def create_app(config: Config | None = None, *,
               echo_transport: httpx.AsyncBaseTransport | None = None) -> QuartTrio:
    config = config or Config.load(None)
    app = QuartTrio("gateway")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    # Streams set `response.timeout = None` and enforce our own idle/total timeouts instead;
    # this bound only applies to plain responses, which never take longer than the upstream.
    app.config["RESPONSE_TIMEOUT"] = config.timeouts.total + 30
    app.config["BODY_TIMEOUT"] = config.timeouts.idle
    state = GatewayState(config, echo_transport=echo_transport)
    app.extensions["gateway"] = state
    reloader = register_management(app, state)
    register_openapi(app)
    metrics = GatewayMetrics()
    app.extensions["metrics"] = metrics
    # Told by the serving worker when shutdown begins (gateway/http/draining.py).
    draining = app.extensions["draining"] = Draining()
    reloader.listeners.append(metrics.policy_reloaded)

    @app.before_serving
    async def _open() -> None:
        await state.open()
        state.nursery = app.nursery
        await app.nursery.start(state.event_writer.run)
        await app.nursery.start(reloader.run)  # policies directory hot reload
        await app.nursery.start(metrics.run_sync, state)
        # /readyz checks that the file at the path is still the one opened here.
        app.extensions["database_identity"] = database_identity(config.database_path)
        for connector in state.connectors:  # each its own task: one slow one delays no other
            await app.nursery.start(connector.run)
        for task in state.shared_state_tasks():  # rollout windows summed in Redis
            await app.nursery.start(task)
        for provider in config.providers.values():
            if provider.is_echo:
                log.warning("provider %r has no API key: answered by the built-in echo upstream",
                            provider.name)

    @app.after_serving
    async def _close() -> None:
        # Every request has finished by now (hypercorn serves no more): write what is queued.
        await state.event_writer.drain()
        for connector in state.connectors:
            connector.stop()
        history.close()
        await state.aclose()

    def surface(handler: Callable[..., Awaitable[Outbound]], adapter: Adapter
                ) -> Callable[[Inbound], Awaitable[Outbound]]:
        return lambda inbound: handler(state, adapter, inbound)

    api_routes = [
        ApiRoute("POST", "/v1/chat/completions", CHAT, surface(compat.proxy_api, CHAT)),
        ApiRoute("POST", "/v1/responses", RESPONSES, surface(compat.proxy_api, RESPONSES)),
        ApiRoute("POST", "/v1/messages", MESSAGES, surface(compat.proxy_api, MESSAGES)),
        ApiRoute("POST", "/v1/messages/count_tokens", COUNT_TOKENS,
                 surface(compat.proxy_api, COUNT_TOKENS)),
        ApiRoute("GET", "/v1/models", CHAT, lambda inbound: compat.proxy_models(state, inbound)),
    ]
    governed = PolicySurface(state)

    def policy_surface(adapter: Adapter) -> Callable[[Inbound], Awaitable[Outbound]]:
        return lambda inbound: governed.handle(adapter, inbound)

    async def policy_passthrough(adapter: Adapter, inbound: Inbound) -> Outbound:
        governed.require_plan(inbound)
        if adapter is COUNT_TOKENS:
            return await compat.proxy_api(state, adapter, inbound, authenticated=True)
        return await compat.proxy_models(state, inbound, authenticated=True)

    for prefix in ("/policy", "/policy/v1"):
        api_routes += [
            ApiRoute("POST", f"{prefix}/chat/completions", CHAT, policy_surface(CHAT)),
            ApiRoute("POST", f"{prefix}/responses", RESPONSES, policy_surface(RESPONSES)),
            ApiRoute("POST", f"{prefix}/messages", MESSAGES, policy_surface(MESSAGES)),
            ApiRoute("POST", f"{prefix}/messages/count_tokens", COUNT_TOKENS,
                     lambda inbound: policy_passthrough(COUNT_TOKENS, inbound)),
            ApiRoute("GET", f"{prefix}/models", CHAT,
                     lambda inbound: policy_passthrough(CHAT, inbound)),
        ]
    api_routes.append(ApiRoute("POST", "/policy/simulate", CHAT, governed.simulate))
    # The hot API routes bypass quart's per-request machinery (see gateway/http/routes.py).
    app.asgi_app = FastRoutes(  # type: ignore[method-assign,assignment]
        app.asgi_app, api_routes, max_body_bytes=config.max_body_bytes,  # type: ignore[arg-type]
        metrics=metrics, draining=draining)

    history = HistoryReader(config.database_path, config.admin_token)

    @app.get(HISTORY_PATH)
    async def policy_history() -> Response:
        params = {name: request.args.getlist(name) for name in request.args}
        return _to_quart(await history.respond(request.headers.get("authorization"), params))

    @app.get("/healthz")
    async def healthz() -> Response:
        return _to_quart(Outbound.json(200, {"status": "ok"}))

    @app.get(METRICS_PATH)
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(state), status=200,
                        headers={"content-type": METRICS_CONTENT_TYPE})

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        adapter = MESSAGES if request.path.startswith(("/v1/messages", "/policy/messages")) \
            else CHAT
        wrapped: GatewayError
        if error.code == 405:
            wrapped = MethodNotAllowed(f"Method {request.method} is not allowed on {request.path}.")
        elif error.code == 413:
            wrapped = RequestTooLarge("The request body is larger than the configured limit.")
        else:
            wrapped = NotFound(f"Unknown path {request.method} {request.path}.")
        return _to_quart(error_response(adapter, wrapped))

    return app


def _to_quart(out: Outbound) -> Response:
    if out.stream is not None:
        response = Response(out.stream, status=out.status, headers=Headers(out.headers))
        # Quart would cut the stream at RESPONSE_TIMEOUT; the relay applies its own timeouts.
        response.timeout = None
        return response
    return Response(out.body, status=out.status, headers=Headers(out.headers))
