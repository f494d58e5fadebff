"""Plumbing shared by the management API's resource modules (policies, projects, keys,
simulate): the blueprint, the admin guard around every handler, and the JSON body readers.

Errors use the OpenAI error shape. A handler's `GatewayError` is answered as such; a store's
validation error (`ProjectError`, `IdentityError`) is a 400; anything else is a bug of ours:
logged with the request id and answered 500 in the same shape, never a traceback or a 404.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import orjson
from quart import Blueprint, Response, current_app, g, request
from werkzeug.datastructures import Headers

from gateway.adapters import CHAT
from gateway.admin.auth import Admin, authorize_admin
from gateway.errors import GatewayError, IdentityError, InvalidRequest, ProjectError
from gateway.http.access_log import current_record
from gateway.http.wire import Outbound, error_response
from gateway.policy.json_strings import json_depth

log = logging.getLogger("gateway.admin")

PREFIX = "/api/policy-gateway"
#: Management bodies are small documents; deeper nesting is refused before anything walks it.
MAX_BODY_DEPTH = 64

blueprint = Blueprint("management", __name__, url_prefix=PREFIX)


def state() -> Any:
    return current_app.extensions["gateway"]


def admin() -> Admin:
    """The admin of the current request (set by the guard of `admin_route`)."""
    current: Admin = g.admin
    return current


def to_quart(out: Outbound) -> Response:
    return Response(out.body, status=out.status, headers=Headers(out.headers))


def json_response(status: int, value: object) -> Response:
    return to_quart(Outbound.json(status, value))


def internal_error(where: str) -> GatewayError:
    """A 500 for a bug of ours, logged with the request id the client also got."""
    record = current_record()
    request_id = record.request_id if record is not None else "-"
    log.exception("management request %s failed (request id %s)", where, request_id)
    return GatewayError(f"The gateway failed to handle this request (request id {request_id}).")


Handler = Callable[..., Awaitable[Response]]


def admin_route(rule: str, methods: list[str]) -> Callable[[Handler], Handler]:
    """Register `handler` on the blueprint behind the admin check and the error mapping."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(**params: Any) -> Response:
            gateway = state()
            # Read the whole body even when the answer does not need it (401, 404): on a
            # keep-alive connection hypercorn stalls a later request behind an unread body.
            await request.get_data()
            try:
                # Kept for the handler: tenancy checks, and a policy write's revision event
                # names its admin.
                g.admin = authorize_admin(gateway, request.headers)
                g.admin_user_id = g.admin.user_id
                return await handler(gateway, **params)
            except GatewayError as exc:
                return to_quart(error_response(CHAT, exc))
            except (ProjectError, IdentityError) as exc:
                return to_quart(error_response(CHAT, InvalidRequest(str(exc))))
            except Exception:  # a bug of ours (trio.Cancelled is a BaseException and passes)
                return to_quart(error_response(
                    CHAT, internal_error(f"{request.method} {request.path}")))

        blueprint.add_url_rule(rule, view_func=guarded, methods=methods)
        return guarded

    return wrap


def decode_body(raw: bytes | str) -> Any:
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if json_depth(body) > MAX_BODY_DEPTH:
        raise InvalidRequest(f"The request body is nested more than {MAX_BODY_DEPTH} levels "
                             "deep.")
    return body


async def object_body() -> dict[str, Any]:
    body = decode_body(await request.get_data())
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def refuse_unknown_fields(body: dict[str, Any], known: Collection[str]) -> None:
    """400 naming the first field the endpoint does not take (a misplaced id included)."""
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise InvalidRequest(f"Unknown field '{unknown[0]}'; this endpoint takes "
                             f"{', '.join(sorted(known))}.", param=unknown[0])


def string_field(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"'{name}' must be a non-empty string.", param=name)
    return value
