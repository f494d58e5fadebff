"""The management API under `/api/policy-gateway/` (SPEC §10), plus `GET /readyz`.

Every endpoint needs the admin credential: `Authorization: Bearer <admin token>` (the configured
`[admin]` token, compared in constant time) or a JWT whose user has the admin role. JSON in and
out; errors use the OpenAI error shape with status 400 (bad input), 401/403 (credential),
404 (unknown id) or 409 (conflict).

Policies are files: a write checks the source first (a policy that fails is refused with its
diagnostics and the file in force is untouched), replaces `<policy_id>.pol` (or `.json`)
atomically, and reloads the directory at once through `PolicyReloader`, which emits the
`revision` event. The watcher later sees the same content and records nothing new.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import sqlite3
import urllib.parse
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import trio
from quart import Blueprint, Quart, Response, current_app, g, request
from werkzeug.datastructures import Headers

import dsl
from gateway.adapters import CHAT
from gateway.admin.registry import PolicyFileError, PolicyRegistry, list_revisions
from gateway.admin.reload import (
    PolicyConflict,
    PolicyIdRefused,
    PolicyReloader,
    placed_policy,
    registry_problems,
    write_policy_file,
)
from gateway.errors import (
    AdminRequired,
    Conflict,
    GatewayError,
    InvalidPolicy,
    InvalidRequest,
    InvalidToken,
    NotFound,
)
from gateway.http.wire import Inbound, Outbound, error_response
from gateway.identity.jwt import looks_like_jwt
from gateway.identity.keys import Caller, IdentityError, IdentityStore, credential_from_headers
from gateway.identity.projects import ProjectError, ProjectStore
from gateway.surfaces.policy import PolicySurface

log = logging.getLogger("gateway.admin.routes")

PREFIX = "/api/policy-gateway"

blueprint = Blueprint("management", __name__, url_prefix=PREFIX)
health = Blueprint("health", __name__)






def register(app: Quart, state: Any) -> PolicyReloader:
    """Add the management API and `/readyz` to `app`; returns the reloader, whose `run` the app
    starts in its nursery while serving."""
    reloader = PolicyReloader(state)
    app.extensions["policy_reloader"] = reloader
    app.register_blueprint(blueprint)
    app.register_blueprint(health)
    return reloader


# --- plumbing ---------------------------------------------------------------------------------

def _state() -> Any:
    return current_app.extensions["gateway"]


def _reloader() -> PolicyReloader:
    reloader: PolicyReloader = current_app.extensions["policy_reloader"]
    return reloader


def _reload_as_admin() -> PolicyRegistry:
    """Reload after an API write; its revision events name the admin who made it."""
    return _reloader().reload(user_id=g.admin_user_id)


def _to_quart(out: Outbound) -> Response:
    return Response(out.body, status=out.status, headers=Headers(out.headers))


def _json(status: int, value: object) -> Response:
    return _to_quart(Outbound.json(status, value))


def authorize_admin(state: Any, headers: Any) -> str:
    """The admin's user id (`admin` for the token, the JWT `sub` otherwise); raises 401 without
    a valid credential and 403 for a valid one that is not an admin's."""
    credential = credential_from_headers(headers)
    if credential is None:
        raise InvalidToken("Management endpoints need 'Authorization: Bearer <admin token>'.")
    token = state.config.admin_token
    if token and hmac.compare_digest(credential.encode(), token.encode()):
        return "admin"
    if looks_like_jwt(credential) and state.jwt is not None:
        caller = state.authenticate(credential)  # InvalidToken (401) when bad or expired
        if caller.jwt is not None and caller.jwt.is_admin:
            return str(caller.user_id)
        raise AdminRequired("This token's user does not have the admin role.")
    state.authenticate(credential)  # 401 for an unknown or revoked key
    raise AdminRequired("API keys cannot use the management API; use the admin token.")


Handler = Callable[..., Awaitable[Response]]


def admin_route(rule: str, methods: list[str]) -> Callable[[Handler], Handler]:
    """Register `handler` on the blueprint behind the admin check and the error mapping."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(**params: Any) -> Response:
            state = _state()
            # Read the whole body even when the answer does not need it (401, 404): on a
            # keep-alive connection hypercorn stalls a later request behind an unread body.
            await request.get_data()
            try:
                # Kept for the handler: a policy write's revision event names its admin.
                g.admin_user_id = authorize_admin(state, request.headers)
                return await handler(state, **params)
            except GatewayError as exc:
                return _to_quart(error_response(CHAT, exc))
            except (ProjectError, IdentityError) as exc:
                return _to_quart(error_response(CHAT, InvalidRequest(str(exc))))

        blueprint.add_url_rule(rule, view_func=guarded, methods=methods)
        return guarded

    return wrap


async def _body() -> Any:
    raw = await request.get_data()
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None


async def _object_body() -> dict[str, Any]:
    body = await _body()
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def _string_field(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"'{name}' must be a non-empty string.", param=name)
    return value


# --- policies -----------------------------------------------------------------------------------

def _policy_summary(loaded: Any, registry: PolicyRegistry) -> dict[str, Any]:
    return {"policy_id": loaded.policy_id, "name": loaded.name, "revision": loaded.revision,
            "classification": loaded.classification, "path": loaded.path,
            "sha256": loaded.sha256, "file_error": loaded.path in registry.errors}


async def _policy_source() -> str:
    """The policy text of a write: a `.pol` source as text/plain, or JSON: `{"source": "..."}`
    for a `.pol` source, or a JSON policy document itself (SPEC §5.9)."""
    if (request.mimetype or "").startswith("text/"):
        raw = await request.get_data(as_text=False)
        try:
            text = raw if isinstance(raw, str) else raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest("A policy source must be UTF-8 text.") from None
        if not text.strip():
            raise InvalidRequest("The policy source is empty.")
        return text
    body = await _object_body()
    if "source" in body:
        source = body["source"]
        if not isinstance(source, str) or not source.strip():
            raise InvalidRequest("'source' must be the non-empty text of a policy.",
                                 param="source")
        return source
    return orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n"


def _invalid_policy(diagnostics: list[dsl.Diagnostic]) -> GatewayError:
    first = next((d for d in diagnostics if d.severity == "error"), None)
    message = (f"The policy failed its check: {first.line}:{first.column}: {first.message}"
               if first else "The policy failed its check.")
    return InvalidPolicy(message, extra={"diagnostics": [d.as_dict() for d in diagnostics]})


def _write_policy(state: Any, source: str, replacing: Any | None) -> dict[str, Any]:
    """Check, write atomically, reload: the policy in force changes only if all of it passes."""
    filename = f"<{'update' if replacing else 'create'}>"
    try:
        target = write_policy_file(state.config.policies_dir, source, state.registry,
                                   replacing=replacing, filename=filename)
        registry = _reload_as_admin()
        loaded = placed_policy(registry, target.stem, target)
    except PolicyFileError as failure:
        raise _invalid_policy(failure.diagnostics) from None
    except PolicyIdRefused as exc:
        raise InvalidRequest(str(exc)) from None
    except PolicyConflict as exc:
        raise Conflict(str(exc)) from None
    return {**_policy_summary(loaded, registry), "source": loaded.source}


def _delete_policy_file(path: str) -> PolicyRegistry:
    """Remove the file and reload with no await in between: the directory watcher (same
    thread) must not see the deletion first and record it without the admin's id."""
    Path(path).unlink(missing_ok=True)
    return _reload_as_admin()


def _loaded_or_404(state: Any, policy_id: str) -> Any:
    loaded = state.registry.get(policy_id)
    if loaded is None:
        raise NotFound(f"No policy {policy_id!r} is loaded.")
    return loaded


@admin_route("/policies", ["GET"])
async def list_policies(state: Any) -> Response:
    registry = state.registry
    data = [_policy_summary(p, registry)
            for p in sorted(registry.policies.values(), key=lambda p: p.policy_id)]
    return _json(200, {"object": "list", "data": data, "errors": registry_problems(registry)})


@admin_route("/policies", ["POST"])
async def create_policy(state: Any) -> Response:
    return _json(201, _write_policy(state, await _policy_source(), None))


@admin_route("/policies/validate", ["POST"])
async def validate_policy(state: Any) -> Response:
    source = await _policy_source()
    try:
        policy = dsl.compile_policy(source, filename="<validate>")
    except dsl.PolicyError as failure:
        return _json(200, {"valid": False, "policy_id": None,
                           "diagnostics": [d.as_dict() for d in failure.diagnostics]})
    return _json(200, {"valid": True, "policy_id": policy.policy_id,
                       "diagnostics": [d.as_dict() for d in dsl.check(source, "<validate>")]})


@admin_route("/policies/<policy_id>", ["GET"])
async def read_policy(state: Any, policy_id: str) -> Response:
    loaded = _loaded_or_404(state, policy_id)
    return _json(200, {**_policy_summary(loaded, state.registry), "source": loaded.source})


@admin_route("/policies/<policy_id>", ["PUT"])
async def update_policy(state: Any, policy_id: str) -> Response:
    loaded = _loaded_or_404(state, policy_id)
    return _json(200, _write_policy(state, await _policy_source(), loaded))


@admin_route("/policies/<policy_id>", ["DELETE"])
async def delete_policy(state: Any, policy_id: str) -> Response:
    loaded = _loaded_or_404(state, policy_id)
    registry = _delete_policy_file(loaded.path)
    revisions = list_revisions(state.db, policy_id)
    return _json(200, {"policy_id": policy_id, "deleted": registry.get(policy_id) is None,
                       "revision": revisions[-1].revision if revisions else None})


@admin_route("/policies/<policy_id>/revisions", ["GET"])
async def policy_revisions(state: Any, policy_id: str) -> Response:
    revisions = list_revisions(state.db, policy_id)
    if not revisions:
        raise NotFound(f"Policy {policy_id!r} has no revisions.")
    data = [{"policy_id": r.policy_id, "revision": r.revision, "edit_type": r.edit_type,
             "sha256": r.sha256, "name": r.name, "classification": r.classification,
             "path": r.path, "created_at": r.created_at, "source": r.source}
            for r in revisions]
    return _json(200, {"object": "list", "data": data})


# --- projects -------------------------------------------------------------------------------

def _project_or_404(state: Any, project_id: str) -> Any:
    try:
        return ProjectStore(state.db).get(project_id)
    except ProjectError:
        raise NotFound(f"No project {project_id!r}.") from None


@admin_route("/projects", ["GET"])
async def list_projects(state: Any) -> Response:
    account = request.args.get("account_id") or None
    return _json(200, {"object": "list",
                       "data": [p.as_dict() for p in ProjectStore(state.db).list(account)]})


@admin_route("/projects", ["POST"])
async def create_project(state: Any) -> Response:
    body = await _object_body()
    unknown = set(body) - {"id", "account_id", "name", "status", "policy_id", "budget",
                           "user_quota", "allow_inline_policy"}
    if unknown:
        raise InvalidRequest(f"Unknown field(s): {', '.join(sorted(unknown))}.")
    project_id = _string_field(body, "id", required=True)
    account_id = _string_field(body, "account_id", required=True)
    assert project_id is not None and account_id is not None
    store = ProjectStore(state.db)
    if state.db.execute("SELECT 1 FROM projects WHERE id = ?", [project_id]).fetchone():
        raise Conflict(f"Project {project_id!r} already exists.")
    project = store.create(
        project_id, account_id=account_id, name=body.get("name", project_id),
        status=body.get("status", "active"), policy_id=body.get("policy_id"),
        budget=body.get("budget"), user_quota=body.get("user_quota"),
        allow_inline_policy=body.get("allow_inline_policy", False),
        known_policies=frozenset(state.registry.policies))
    state.identities.invalidate()
    return _json(201, project.as_dict())


@admin_route("/projects/<project_id>", ["GET"])
async def read_project(state: Any, project_id: str) -> Response:
    return _json(200, _project_or_404(state, project_id).as_dict())


@admin_route("/projects/<project_id>", ["PATCH"])
async def update_project(state: Any, project_id: str) -> Response:
    body = await _object_body()
    _project_or_404(state, project_id)
    if not body:
        raise InvalidRequest("Nothing to update: give name, status, policy_id, budget, "
                             "user_quota or allow_inline_policy.")
    project = ProjectStore(state.db).update(
        project_id, known_policies=frozenset(state.registry.policies), **body)
    state.identities.invalidate()
    return _json(200, project.as_dict())


@admin_route("/projects/<project_id>/usage", ["GET"])
async def project_usage(state: Any, project_id: str) -> Response:
    from gateway.quota.sqlite import usage_report

    project = _project_or_404(state, project_id)
    top_text = request.args.get("top", "10")
    if not top_text.isdigit() or not 1 <= int(top_text) <= 1000:
        raise InvalidRequest("'top' must be an integer from 1 to 1000.", param="top")
    if hasattr(state.quotas, "usage_report"):  # the Redis store: counters of every replica
        report = await state.quotas.usage_report(
            project.id, datetime.now(UTC), budget=project.budget,
            user_quota=project.user_quota, top=int(top_text))
    else:
        report = usage_report(state.db.conn, project.id, datetime.now(UTC),
                              budget=project.budget, user_quota=project.user_quota,
                              top=int(top_text))
    return _json(200, report)


# --- keys -----------------------------------------------------------------------------------

def _key_dict(key: Any) -> dict[str, Any]:
    return {"id": key.id, "account_id": key.account_id, "project_id": key.project_id,
            "label": key.label, "key_preview": key.key_preview, "revoked": key.revoked,
            "created_at": key.created_at}


@admin_route("/keys", ["GET"])
async def list_keys(state: Any) -> Response:
    keys = IdentityStore(state.db).list_keys(request.args.get("account_id") or None)
    project = request.args.get("project_id")
    data = [_key_dict(k) for k in keys if project is None or k.project_id == project]
    return _json(200, {"object": "list", "data": data})


@admin_route("/keys", ["POST"])
async def create_key(state: Any) -> Response:
    body = await _object_body()
    project_id = _string_field(body, "project_id")
    account_id = _string_field(body, "account_id")
    label = body.get("label", "")
    if not isinstance(label, str):
        raise InvalidRequest("'label' must be a string.", param="label")
    if project_id is not None:
        project = _project_or_404(state, project_id)
        if account_id is not None and account_id != project.account_id:
            raise InvalidRequest(f"Project {project_id!r} belongs to another account.")
        account_id = project.account_id
    if account_id is None:
        raise InvalidRequest("Give 'project_id' (a key bound to that project) or "
                             "'account_id' (a compat-only key).", param="account_id")
    key, plaintext = IdentityStore(state.db).create_key(account_id, project_id=project_id,
                                                        label=label)
    state.identities.invalidate()
    return _json(201, {**_key_dict(key), "key": plaintext})


@admin_route("/keys/<key_id>/revoke", ["POST"])
async def revoke_key(state: Any, key_id: str) -> Response:
    try:
        key = IdentityStore(state.db).revoke_key(key_id)
    except IdentityError:
        raise NotFound(f"No key {key_id!r}.") from None
    state.identities.invalidate()
    return _json(200, _key_dict(key))


# --- simulate -------------------------------------------------------------------------------

class _AdminSimulation(PolicySurface):
    """`PolicySurface.simulate` for a project the admin names, as that project's account."""

    def __init__(self, state: Any, caller: Caller) -> None:
        super().__init__(state)
        self._caller = caller

    def require_plan(self, inbound: Inbound) -> Caller:
        return self._caller


@admin_route("/simulate", ["POST"])
async def simulate(state: Any) -> Response:
    body = await _object_body()
    project_id = (request.headers.get("x-policy-project") or body.pop("project_id", None)
                  or body.get("policy_project_id"))
    if not isinstance(project_id, str) or not project_id:
        raise InvalidRequest("Name the project: 'project_id' in the body or X-Policy-Project.",
                             param="project_id")
    project = _project_or_404(state, project_id)
    account = state.identities.account(project.account_id)
    if account is None:
        raise NotFound(f"The account of project {project_id!r} no longer exists.")
    body["policy_project_id"] = project_id
    headers = {k.lower(): v for k, v in request.headers.items()
               if k.lower() not in ("authorization", "x-api-key", "x-policy-project")}
    user_id = authorize_admin(state, request.headers)
    surface = _AdminSimulation(state, Caller(account=account, key=None, user_id=user_id))
    out = await surface.simulate(Inbound(method="POST", path=request.path, headers=headers,
                                         body=orjson.dumps(body)))
    return _to_quart(out)


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
    dependencies = await _readiness_checks(state)
    if problems or database != "ok" or shutting_down or dependencies:
        reasons = [f"database {database}"] if database != "ok" else []
        reasons += [f"{name} {answer}" for name, answer in dependencies.items()]
        reasons += [f"policy file {p['path']} failed its check" if p["path"] else p["message"]
                    for p in problems]
        if shutting_down:
            reasons.append("shutting down")
        return _json(503, {"status": "not_ready", "database": database,
                           "policy_errors": problems, "shutting_down": shutting_down,
                           "reasons": reasons})
    return _json(200, {"status": "ready", "database": "ok"})


READY_PROBE_TIMEOUT = 2.0


async def _readiness_checks(state: Any) -> dict[str, str]:
    """The failing extra checks of `state.readiness_checks` (Redis, when configured): name ->
    "unavailable: why". Each gets READY_PROBE_TIMEOUT."""
    failing = {}
    for name, check in getattr(state, "readiness_checks", {}).items():
        answer = f"unavailable: no answer within {READY_PROBE_TIMEOUT:g} s"
        with trio.move_on_after(READY_PROBE_TIMEOUT):
            answer = await check()
        if answer != "ok":
            failing[name] = answer
    return failing


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
