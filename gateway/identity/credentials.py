"""Who is calling (an API key, or a JWT when the gateway is configured for them), and which
project they may use."""

from __future__ import annotations

from gateway.errors import (
    InvalidToken,
    ProjectDisabled,
    ProjectForbidden,
    ProjectNotFound,
    ProjectRequired,
)
from gateway.identity.jwt import JwtVerifier, looks_like_jwt
from gateway.identity.keys import Caller, IdentityCache
from gateway.identity.projects import Project


def authenticate(identities: IdentityCache, jwt: JwtVerifier | None, credential: str) -> Caller:
    """The caller a credential names; `InvalidApiKey`, `ApiKeyRevoked` or `InvalidToken` (401)
    when it names none."""
    if looks_like_jwt(credential):
        if jwt is None:
            raise InvalidToken("This gateway does not accept JWTs; use an API key.")
        user = jwt.verify(credential)
        account = identities.account(user.account_id)
        if account is None:
            raise InvalidToken(f"The token names an unknown account '{user.account_id}'.")
        return Caller(account=account, key=None, user_id=user.user_id, jwt=user)
    return identities.authenticate_key(credential)


def resolve_project(directory: IdentityCache, caller: Caller, project_id: str | None) -> Project:
    """The project a request names (or the caller's key is bound to), if the caller may use it
    and it is active. `caller` was just authenticated on `directory`, which refreshed it."""
    if project_id is None:
        if caller.key is None:
            raise ProjectRequired(
                "Name the project with the X-Policy-Project header or 'policy_project_id'.")
        project_id = caller.key.project_id
        if project_id is None:
            raise ProjectRequired(
                "This key is not bound to a project; name one with X-Policy-Project.")
    project = directory.authenticated_project(project_id)
    if project is None:
        raise ProjectNotFound(f"Project '{project_id}' does not exist.")
    if project.account_id != caller.account.id:
        raise ProjectForbidden(f"You may not use project '{project_id}'.")
    if caller.key is not None:
        if caller.key.project_id is not None and caller.key.project_id != project_id:
            raise ProjectForbidden(f"This key may not use project '{project_id}'.")
    elif caller.jwt is not None and not directory.jwt_may_use(caller, project_id):
        raise ProjectForbidden(f"You are not granted project '{project_id}'.")
    if project.status != "active":
        raise ProjectDisabled(f"Project '{project_id}' is disabled.")
    return project
