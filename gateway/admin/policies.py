"""`/api/policy-gateway/policies`: the policies directory through the management API.

Policies are files: a write checks the source first (a policy that fails is refused with its
diagnostics and the file in force is untouched), replaces `<policy_id>.pol` (or `.json`)
atomically, and reloads the directory at once through `PolicyReloader`, which emits the
`revision` event. The watcher later sees the same content and records nothing new.

Policies are shared by every account: any admin may read and check them, writes need an admin
of every account (gateway/admin/auth.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from quart import Response, current_app, g, request

import dsl
from gateway.admin.common import (
    admin,
    admin_route,
    decode_body,
    json_response,
)
from gateway.admin.registry import PolicyRegistry, _atomic_write, list_revisions, policy_files
from gateway.admin.reload import PolicyReloader, placed_policy, registry_problems, write_policy_file
from gateway.errors import (
    Conflict,
    GatewayError,
    InvalidPolicy,
    InvalidRequest,
    NotFound,
    PolicyConflict,
    PolicyFileError,
    PolicyIdRefused,
)
from gateway.policy.escalation import escalation_diagnostic


def _reloader() -> PolicyReloader:
    reloader: PolicyReloader = current_app.extensions["policy_reloader"]
    return reloader


async def _reload_as_admin() -> PolicyRegistry:
    """Reload after an API write; its revision events name the admin who made it."""
    return await _reloader().reload_async(user_id=g.admin_user_id)


async def _change_directory(state: Any, change: Callable[[], list[str]]) -> None:
    """Run `change` (it edits the served directory and returns the file names it touched) and,
    with PostgreSQL, publish those files to the database. If publishing fails, the directory
    is put back as it was, so this replica never serves a policy the others do not have."""
    folder = Path(state.config.policies_dir)
    before = ({p.name: p.read_bytes() for p in policy_files(folder)}
              if state.postgres is not None else {})
    names = change()
    try:
        await state.publish_policies(names)
    except BaseException:
        for name in names:
            if name in before:
                _atomic_write(folder / name, before[name].decode("utf-8"))
            else:
                (folder / name).unlink(missing_ok=True)
        raise


def _policy_summary(loaded: Any, registry: PolicyRegistry) -> dict[str, Any]:
    return {"policy_id": loaded.policy_id, "name": loaded.name, "revision": loaded.revision,
            "classification": loaded.classification, "path": loaded.path,
            "sha256": loaded.sha256, "file_error": loaded.path in registry.errors}


async def _policy_source() -> str:
    """The policy text of a write: a `.pol` source as text/plain, or JSON: `{"source": "..."}`
    for a `.pol` source, or a JSON policy document itself (docs/policy-language.md)."""
    raw = await request.get_data(as_text=False)
    if (request.mimetype or "").startswith("text/"):
        try:
            text = raw if isinstance(raw, str) else raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest("A policy source must be UTF-8 text.") from None
        if not text.strip():
            raise InvalidRequest("The policy source is empty.")
        return text
    body = decode_body(raw)
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if "source" in body:
        if len(body) > 1:
            extra = sorted(set(body) - {"source"})[0]
            raise InvalidRequest(f"Unknown field '{extra}' beside 'source': send the policy "
                                 "text alone, or a JSON policy document.", param=extra)
        source = body["source"]
        if not isinstance(source, str) or not source.strip():
            raise InvalidRequest("'source' must be the non-empty text of a policy.",
                                 param="source")
        return source
    try:
        return orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n"
    except orjson.JSONEncodeError as exc:
        raise InvalidRequest(f"The policy document cannot be encoded: {exc}") from None


def _invalid_policy(diagnostics: list[dsl.Diagnostic]) -> GatewayError:
    first = next((d for d in diagnostics if d.severity == "error"), None)
    message = (f"The policy failed its check: {first.line}:{first.column}: {first.message}"
               if first else "The policy failed its check.")
    return InvalidPolicy(message, extra={"diagnostics": [d.as_dict() for d in diagnostics]})


async def _write_policy(state: Any, source: str, replacing: Any | None) -> dict[str, Any]:
    """Check, write atomically, reload: the policy in force changes only if all of it passes."""
    admin().require_global("Writing a policy")
    filename = f"<{'update' if replacing else 'create'}>"

    def write() -> list[str]:
        target = write_policy_file(state.config.policies_dir, source, state.registry,
                                   replacing=replacing, filename=filename,
                                   escalation=state.escalation)
        written.append(target)
        return [target.name, *([Path(replacing.path).name] if replacing else [])]

    written: list[Path] = []
    try:
        async with _reloader().lock:
            await _change_directory(state, write)
            registry = await _reload_as_admin()
        loaded = placed_policy(registry, written[0].stem, written[0])
    except PolicyFileError as failure:
        raise _invalid_policy(failure.diagnostics) from None
    except PolicyIdRefused as exc:
        raise InvalidRequest(str(exc)) from None
    except PolicyConflict as exc:
        raise Conflict(str(exc)) from None
    return {**_policy_summary(loaded, registry), "source": loaded.source}


async def _delete_policy_file(state: Any, path: str) -> PolicyRegistry:
    """Remove the file and reload holding the reloader's lock: the directory watcher must not
    see the deletion first and record it without the admin's id."""

    def remove() -> list[str]:
        Path(path).unlink(missing_ok=True)
        return [Path(path).name]

    async with _reloader().lock:
        await _change_directory(state, remove)
        return await _reload_as_admin()


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
    return json_response(200, {"object": "list", "data": data,
                               "errors": registry_problems(registry)})


@admin_route("/policies", ["POST"])
async def create_policy(state: Any) -> Response:
    return json_response(201, await _write_policy(state, await _policy_source(), None))


@admin_route("/policies/validate", ["POST"])
async def validate_policy(state: Any) -> Response:
    source = await _policy_source()
    try:
        policy = dsl.compile_policy(source, filename="<validate>")
    except dsl.PolicyError as failure:
        return json_response(200, {"valid": False, "policy_id": None, "diagnostics": [
            d.as_dict() for d in failure.diagnostics]})
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidRequest(f"The policy cannot be checked: {exc}") from None
    diagnostics = [d.as_dict() for d in dsl.check(source, "<validate>")]
    problem = escalation_diagnostic(policy, state.escalation, source, "<validate>")
    if problem is not None:  # checked as the gateway would load it
        return json_response(200, {"valid": False, "policy_id": None,
                                   "diagnostics": [*diagnostics, problem.as_dict()]})
    return json_response(200, {"valid": True, "policy_id": policy.policy_id,
                               "diagnostics": diagnostics})


@admin_route("/policies/<policy_id>", ["GET"])
async def read_policy(state: Any, policy_id: str) -> Response:
    loaded = _loaded_or_404(state, policy_id)
    return json_response(200, {**_policy_summary(loaded, state.registry),
                               "source": loaded.source})


@admin_route("/policies/<policy_id>", ["PUT"])
async def update_policy(state: Any, policy_id: str) -> Response:
    loaded = _loaded_or_404(state, policy_id)
    return json_response(200, await _write_policy(state, await _policy_source(), loaded))


@admin_route("/policies/<policy_id>", ["DELETE"])
async def delete_policy(state: Any, policy_id: str) -> Response:
    loaded = _loaded_or_404(state, policy_id)
    admin().require_global("Deleting a policy")
    registry = await _delete_policy_file(state, loaded.path)
    revisions = await state.store_call(list_revisions, state.shared_sql, policy_id)
    return json_response(200, {"policy_id": policy_id,
                                "deleted": registry.get(policy_id) is None,
                                "revision": revisions[-1].revision if revisions else None})


@admin_route("/policies/<policy_id>/revisions", ["GET"])
async def policy_revisions(state: Any, policy_id: str) -> Response:
    revisions = await state.store_call(list_revisions, state.shared_sql, policy_id)
    if not revisions:
        raise NotFound(f"Policy {policy_id!r} has no revisions.")
    data = [{"policy_id": r.policy_id, "revision": r.revision, "edit_type": r.edit_type,
             "sha256": r.sha256, "name": r.name, "classification": r.classification,
             "path": r.path, "created_at": r.created_at, "source": r.source}
            for r in revisions]
    return json_response(200, {"object": "list", "data": data})
