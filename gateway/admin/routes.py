"""The management API under `/api/policy-gateway/` (docs/management.md).

Every endpoint needs an admin credential, checked by the one admin check of
gateway/admin/auth.py (the configured `[admin]` token, or a JWT with the admin role: of its own
account only, unless it holds the super-admin role). JSON in and out; errors use the OpenAI
error shape with status 400 (bad input), 401/403 (credential), 404 (unknown id, or another
account's), 409 (conflict) or 500 (a bug of ours, logged with the request id).

The routes live by resource: gateway/admin/policies.py, projects.py, keys.py, simulate.py; the
shared plumbing (guard, bodies, errors) in gateway/admin/common.py.
"""

from __future__ import annotations

from typing import Any

from quart import Quart, Response, current_app
from werkzeug.datastructures import Headers

# Imported for their routes: each registers its handlers on the management blueprint.
from gateway.admin import keys, policies, projects, simulate  # noqa: F401
from gateway.admin.auth import authorize_admin
from gateway.admin.common import PREFIX, blueprint
from gateway.admin.readiness import health
from gateway.admin.reload import PolicyReloader
from gateway.http.wire import Outbound

__all__ = ["PREFIX", "authorize_admin", "register"]



def register(app: Quart, state: Any) -> PolicyReloader:
    """Add the management API and `/readyz` to `app`; returns the reloader, whose `run` the app
    starts in its nursery while serving."""
    reloader = PolicyReloader(state)
    app.extensions["policy_reloader"] = reloader
    app.register_blueprint(blueprint)
    app.register_blueprint(health)  # /readyz (gateway/admin/readiness.py)
    return reloader


def _state() -> Any:
    return current_app.extensions["gateway"]


def _to_quart(out: Outbound) -> Response:
    return Response(out.body, status=out.status, headers=Headers(out.headers))


def _json(status: int, value: object) -> Response:
    return _to_quart(Outbound.json(status, value))
