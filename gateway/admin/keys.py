"""`/api/policy-gateway/keys`: API keys (the plaintext is shown once, on creation).

An account's admin sees, creates and revokes only its account's keys; another account's key or
project is answered like a missing one.
"""

from __future__ import annotations

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
from gateway.admin.projects import project_or_404
from gateway.errors import IdentityError, InvalidRequest, NotFound
from gateway.identity.keys import IdentityStore


def _key_dict(key: Any) -> dict[str, Any]:
    return {"id": key.id, "account_id": key.account_id, "project_id": key.project_id,
            "label": key.label, "key_preview": key.key_preview, "revoked": key.revoked,
            "created_at": key.created_at}


@admin_route("/keys", ["GET"])
async def list_keys(state: Any) -> Response:
    account = request.args.get("account_id") or admin().account_id
    keys = await state.store_call(IdentityStore(state.shared_sql).list_keys, account)
    project = request.args.get("project_id")
    data = [_key_dict(k) for k in keys if admin().manages(k.account_id)
            and (project is None or k.project_id == project)]
    return json_response(200, {"object": "list", "data": data})


@admin_route("/keys", ["POST"])
async def create_key(state: Any) -> Response:
    body = await object_body()
    refuse_unknown_fields(body, ("project_id", "account_id", "label"))
    project_id = string_field(body, "project_id")
    account_id = string_field(body, "account_id")
    label = body.get("label", "")
    if not isinstance(label, str):
        raise InvalidRequest("'label' must be a string.", param="label")
    if project_id is not None:
        project = await project_or_404(state, project_id)
        if account_id is not None and account_id != project.account_id:
            raise InvalidRequest(f"Project {project_id!r} belongs to another account.")
        account_id = project.account_id
    if account_id is None:
        raise InvalidRequest("Give 'project_id' (a key bound to that project) or "
                             "'account_id' (a compat-only key).", param="account_id")
    if not admin().manages(account_id):
        raise InvalidRequest(f"unknown account {account_id!r}", param="account_id")
    key, plaintext = await state.store_call(partial(
        IdentityStore(state.shared_sql).create_key, account_id, project_id=project_id,
        label=label))
    await state.identity_changed()
    return json_response(201, {**_key_dict(key), "key": plaintext})


@admin_route("/keys/<key_id>/revoke", ["POST"])
async def revoke_key(state: Any, key_id: str) -> Response:
    store = IdentityStore(state.shared_sql)
    owner = (await state.store_call(lambda: store.sql.execute(
        "SELECT account_id FROM api_keys WHERE id = ?", [key_id]).fetchone()))
    if owner is None or not admin().manages(owner[0]):
        raise NotFound(f"No key {key_id!r}.")

    def revoke() -> Any:
        try:
            return store.revoke_key(key_id)
        except IdentityError:
            raise NotFound(f"No key {key_id!r}.") from None

    key = await state.store_call(revoke)
    await state.identity_changed()
    return json_response(200, _key_dict(key))
