"""The app factory: `create_app(config)` builds a QuartTrio app with no import-time globals.

Route handlers are thin: they turn the quart request into an `Inbound`, call a surface, and turn
its `Outbound` into a quart response. Every `GatewayError` becomes the adapter's error shape;
anything else is logged and answered with a clean 500 body, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import httpx
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from gateway import compat
from gateway.adapters import CHAT, COUNT_TOKENS, MESSAGES, RESPONSES, Adapter
from gateway.config import Config
from gateway.errors import GatewayError, MethodNotAllowed, NotFound, RequestTooLarge
from gateway.state import GatewayState
from gateway.wire import Inbound, Outbound, error_response

log = logging.getLogger("gateway")

Handler = Callable[[Inbound], Awaitable[Outbound]]


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

    @app.before_serving
    async def _open() -> None:
        await state.open()
        for provider in config.providers.values():
            if provider.is_echo:
                log.warning("provider %r has no API key: answered by the built-in echo upstream",
                            provider.name)

    @app.after_serving
    async def _close() -> None:
        await state.aclose()

    def api_route(path: str, adapter: Adapter, surface: Callable[..., Awaitable[Outbound]],
                  methods: tuple[str, ...] = ("POST",)) -> None:
        async def view() -> Response:
            return await _serve(adapter, lambda inbound: surface(state, adapter, inbound))

        app.add_url_rule(path, endpoint=path, view_func=view, methods=list(methods))

    api_route("/v1/chat/completions", CHAT, compat.proxy_api)
    api_route("/v1/responses", RESPONSES, compat.proxy_api)
    api_route("/v1/messages", MESSAGES, compat.proxy_api)
    api_route("/v1/messages/count_tokens", COUNT_TOKENS, compat.proxy_api)

    @app.get("/v1/models")
    async def models() -> Response:
        return await _serve(CHAT, lambda inbound: compat.proxy_models(state, inbound))

    @app.get("/healthz")
    async def healthz() -> Response:
        return _to_quart(Outbound.json(200, {"status": "ok"}))

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


async def _serve(adapter: Adapter, handler: Handler) -> Response:
    try:
        inbound = await _read_inbound()
        out = await handler(inbound)
    except GatewayError as error:
        out = error_response(adapter, error)
    except Exception:  # a bug of ours: log it, never leak a traceback (Cancelled is not caught)
        log.exception("unhandled error on %s %s", request.method, request.path)
        error = GatewayError("The gateway failed to handle this request.")
        out = error_response(adapter, error)
    return _to_quart(out)


async def _read_inbound() -> Inbound:
    try:
        body = await request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise RequestTooLarge(
            f"The request body is larger than the limit of {request.max_content_length} bytes."
        ) from None
    assert isinstance(body, bytes)
    return Inbound(
        method=request.method,
        path=request.path,
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
        query_string=request.query_string,
    )


def _to_quart(out: Outbound) -> Response:
    if out.stream is not None:
        response = Response(out.stream, status=out.status, headers=out.headers)
        # Quart would cut the stream at RESPONSE_TIMEOUT; the relay applies its own timeouts.
        response.timeout = None
        return response
    return Response(out.body, status=out.status, headers=out.headers)
