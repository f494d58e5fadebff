"""`/api/policy-gateway/projects`: projects and their quota usage.

An account's admin sees and changes only its account's projects; another account's project is
answered like a missing one (404), and creating one in another account like an unknown account.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

from quart import Response, request

from gateway.admin.common import (
    admin,
    admin_route,
    json_response,
    object_body,
    refuse_unknown_fields,
    string_field,
)
from gateway.errors import Conflict, InvalidRequest, NotFound, ProjectError
from gateway.identity.projects import UPDATABLE, ProjectStore

CREATE_FIELDS = ("id", "account_id", "name", "status", "policy_id", "budget", "user_quota",
                 "allow_inline_policy")


async def project_or_404(state: Any, project_id: str) -> Any:
    """The project, if it exists and the current admin manages its account."""
    try:
        project = await state.store_call(ProjectStore(state.shared_sql).get, project_id)
    except ProjectError:
        project = None
    if project is None or not admin().manages(project.account_id):
        raise NotFound(f"No project {project_id!r}.")
    return project


@admin_route("/projects", ["GET"])
async def list_projects(state: Any) -> Response:
    account = request.args.get("account_id") or None
    # An account's admin lists its own account; naming another one finds nothing.
    listed = await state.store_call(ProjectStore(state.shared_sql).list,
                                    account or admin().account_id)
    projects = [p for p in listed if admin().manages(p.account_id)]
    return json_response(200, {"object": "list", "data": [p.as_dict() for p in projects]})


@admin_route("/projects", ["POST"])
async def create_project(state: Any) -> Response:
    body = await object_body()
    refuse_unknown_fields(body, CREATE_FIELDS)
    project_id = string_field(body, "id", required=True)
    account_id = string_field(body, "account_id", required=True)
    assert project_id is not None and account_id is not None
    if not admin().manages(account_id):
        raise InvalidRequest(f"unknown account {account_id!r}", param="account_id")
    store = ProjectStore(state.shared_sql)
    known = frozenset(state.registry.policies)

    def create() -> Any:
        if store.sql.execute("SELECT 1 FROM projects WHERE id = ?", [project_id]).fetchone():
            raise Conflict(f"Project {project_id!r} already exists.")
        return store.create(
            project_id, account_id=account_id, name=body.get("name", project_id),
            status=body.get("status", "active"), policy_id=body.get("policy_id"),
            budget=body.get("budget"), user_quota=body.get("user_quota"),
            allow_inline_policy=body.get("allow_inline_policy", False), known_policies=known)

    project = await state.store_call(create)
    await state.identity_changed()
    return json_response(201, project.as_dict())


@admin_route("/projects/<project_id>", ["GET"])
async def read_project(state: Any, project_id: str) -> Response:
    return json_response(200, (await project_or_404(state, project_id)).as_dict())


@admin_route("/projects/<project_id>", ["PATCH"])
async def update_project(state: Any, project_id: str) -> Response:
    body = await object_body()
    await project_or_404(state, project_id)
    refuse_unknown_fields(body, UPDATABLE)
    if not body:
        raise InvalidRequest("Nothing to update: give name, status, policy_id, budget, "
                             "user_quota or allow_inline_policy.")
    project = await state.store_call(partial(
        ProjectStore(state.shared_sql).update, project_id,
        known_policies=frozenset(state.registry.policies), **body))
    await state.identity_changed()
    return json_response(200, project.as_dict())


@admin_route("/projects/<project_id>/usage", ["GET"])
async def project_usage(state: Any, project_id: str) -> Response:
    project = await project_or_404(state, project_id)
    top_text = request.args.get("top", "10")
    if not top_text.isdigit() or not 1 <= int(top_text) <= 1000:
        raise InvalidRequest("'top' must be an integer from 1 to 1000.", param="top")
    # Each store reads its own counters (Redis: every replica's; SQLite: the quota file).
    report = await state.quotas.usage_report(
        project.id, datetime.now(UTC), budget=project.budget,
        user_quota=project.user_quota, top=int(top_text))
    return json_response(200, report)
