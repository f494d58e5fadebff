"""`POST /api/policy-gateway/simulate`: the decision for a request to a project the admin
names, as that project's account, without the upstream (docs/management.md)."""

from __future__ import annotations

from typing import Any

from quart import Response, request

from gateway.admin.common import admin, admin_route, object_body, to_quart
from gateway.admin.projects import project_or_404
from gateway.errors import InvalidRequest, NotFound
from gateway.identity.keys import Caller
from gateway.surfaces.policy import PolicySurface


@admin_route("/simulate", ["POST"])
async def simulate(state: Any) -> Response:
    body = await object_body()
    project_id = (request.headers.get("x-policy-project") or body.pop("project_id", None)
                  or body.get("policy_project_id"))
    if not isinstance(project_id, str) or not project_id:
        raise InvalidRequest("Name the project: 'project_id' in the body or X-Policy-Project.",
                             param="project_id")
    project = await project_or_404(state, project_id)
    account = state.identities.account(project.account_id)
    if account is None:
        raise NotFound(f"The account of project {project_id!r} no longer exists.")
    body["policy_project_id"] = project_id
    headers = {k.lower(): v for k, v in request.headers.items()
               if k.lower() not in ("authorization", "x-api-key", "x-policy-project")}
    caller = Caller(account=account, key=None, user_id=admin().user_id)
    return to_quart(await PolicySurface(state).simulate_as(caller, headers, body))
