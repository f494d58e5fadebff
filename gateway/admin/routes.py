"""The management API under `/api/policy-gateway/` (SPEC §10), plus `GET /readyz`.

Every endpoint needs an admin credential, checked by the one admin check of
gateway/admin/auth.py (the configured `[admin]` token, or a JWT with the admin role: of its own
account only, unless it holds the super-admin role). JSON in and out; errors use the OpenAI
error shape with status 400 (bad input), 401/403 (credential), 404 (unknown id, or another
account's), 409 (conflict) or 500 (a bug of ours, logged with the request id).

The routes live by resource: gateway/admin/policies.py, projects.py, keys.py, simulate.py; the
shared plumbing (guard, bodies, errors) in gateway/admin/common.py.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from typing import Any

import trio
from quart import Blueprint, Quart, Response, current_app
from werkzeug.datastructures import Headers

# Imported for their routes: each registers its handlers on the management blueprint.
from gateway.admin import keys, policies, projects, simulate  # noqa: F401
from gateway.admin.auth import authorize_admin
from gateway.admin.common import PREFIX, blueprint
from gateway.admin.reload import PolicyReloader, registry_problems
from gateway.http.wire import Outbound

__all__ = ["PREFIX", "authorize_admin", "database_identity", "register"]

health = Blueprint("health", __name__)


def register(app: Quart, state: Any) -> PolicyReloader:
    """Add the management API and `/readyz` to `app`; returns the reloader, whose `run` the app
    starts in its nursery while serving."""
    reloader = PolicyReloader(state)
    app.extensions["policy_reloader"] = reloader
    app.register_blueprint(blueprint)
    app.register_blueprint(health)
    return reloader


def _state() -> Any:
    return current_app.extensions["gateway"]


def _to_quart(out: Outbound) -> Response:
    return Response(out.body, status=out.status, headers=Headers(out.headers))


def _json(status: int, value: object) -> Response:
    return _to_quart(Outbound.json(status, value))


# --- health ---------------------------------------------------------------------------------

@health.get("/readyz")
async def readyz() -> Response:
    """200 when the database can be opened and read at its configured path, every policy file
    passes its check and the gateway is not shutting down; otherwise 503 with the reasons.

    The database is probed with a fresh connection each time (the serving connection would keep
    answering from its open file descriptor after the file or its directory went away)."""
    state = _state()
    problems = registry_problems(state.registry)
    database = "ok"
    try:
        state.db.execute("SELECT 1").fetchone()
    except Exception as exc:  # closed or unusable: not ready, whatever the reason
        database = f"unavailable: {exc}"
    if database == "ok":
        with trio.move_on_after(READY_PROBE_TIMEOUT) as probe:
            database = await trio.to_thread.run_sync(
                _probe_database, state.config.database_path,
                current_app.extensions.get("database_identity"), abandon_on_cancel=True)
        if probe.cancelled_caught:
            database = f"unavailable: no answer within {READY_PROBE_TIMEOUT:g} s"
    draining = current_app.extensions.get("draining")
    shutting_down = draining is not None and draining.draining
    if problems or database != "ok" or shutting_down:
        reasons = [f"database {database}"] if database != "ok" else []
        reasons += [f"policy file {p['path']} failed its check" if p["path"] else p["message"]
                    for p in problems]
        if shutting_down:
            reasons.append("shutting down")
        return _json(503, {"status": "not_ready", "database": database,
                           "policy_errors": problems, "shutting_down": shutting_down,
                           "reasons": reasons})
    return _json(200, {"status": "ready", "database": "ok"})


READY_PROBE_TIMEOUT = 2.0


def database_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the database file, recorded when the app opens it."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _probe_database(path: str, identity: tuple[int, int] | None) -> str:
    """"ok", or why the database file the gateway opened cannot be opened and read for writing
    at `path` (a file created there since, e.g. after the directory was moved, is not it)."""
    if path == ":memory:":
        return "ok"
    if identity is not None and database_identity(path) != identity:
        return f"unavailable: {path} is missing or is not the file the gateway opened"
    try:
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=rw"
        conn = sqlite3.connect(uri, uri=True, timeout=1.0)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except (sqlite3.Error, OSError) as exc:
        return f"unavailable: {exc}"
    return "ok"
