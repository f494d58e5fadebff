"""The OpenAPI 3.1 document of the whole HTTP surface, served at `GET /openapi.json`.

Written by hand from the contract (docs/governed-surface.md, docs/events.md, docs/management.md,
docs/configuration.md) rather than generated: the `/v1` and `/policy` routes bypass quart
(gateway/http/routes.py), and their bodies are the providers' own schemas, which the gateway passes
through. tests/management_e2e/test_openapi.py keeps this document and the routes the app serves in
step, both ways.
"""

from __future__ import annotations

from typing import Any

from quart import Quart, Response

from gateway.admin.routes import PREFIX

JSON = "application/json"

_ERROR = {"type": "object", "required": ["error"], "properties": {
    "error": {"type": "object", "required": ["message", "type", "code"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}},
    "diagnostics": {"type": "array", "items": {"$ref": "#/components/schemas/Diagnostic"}}}}

_SCHEMAS: dict[str, Any] = {
    "Error": _ERROR,
    "AnyObject": {"type": "object"},
    "Diagnostic": {"type": "object", "required": ["line", "column", "severity", "message"],
                   "properties": {"file": {"type": "string"}, "line": {"type": "integer"},
                                  "column": {"type": "integer"},
                                  "severity": {"enum": ["error", "warning"]},
                                  "message": {"type": "string"},
                                  "hint": {"type": ["string", "null"]}}},
    "FileProblem": {"type": "object", "required": ["path", "diagnostics"], "properties": {
        "path": {"type": ["string", "null"]},
        "diagnostics": {"type": "array", "items": {"$ref": "#/components/schemas/Diagnostic"}}}},
    "Policy": {"type": "object", "required": ["policy_id", "name", "revision"], "properties": {
        "policy_id": {"type": "string"}, "name": {"type": "string"},
        "revision": {"type": "integer"}, "classification": {"type": "string"},
        "path": {"type": "string"}, "sha256": {"type": "string"},
        "file_error": {"type": "boolean"}, "source": {"type": "string"}}},
    "PolicyWrite": {"oneOf": [
        {"type": "object", "required": ["source"], "properties": {
            "source": {"type": "string", "description": "the text of a .pol policy"}}},
        {"type": "object", "description": "a JSON policy document (docs/policy-language.md, JSON policies)"}]},
    "Revision": {"type": "object", "required": ["policy_id", "revision", "edit_type"],
                 "properties": {"policy_id": {"type": "string"}, "revision": {"type": "integer"},
                                "edit_type": {"enum": ["create", "update", "delete"]},
                                "sha256": {"type": "string"}, "source": {"type": "string"},
                                "created_at": {"type": "string"}}},
    "Quota": {"type": "object", "description": 'unit -> window -> limit, e.g. '
              '{"requests": {"daily": 1000}}; 0 = unlimited',
              "additionalProperties": {"type": "object",
                                       "additionalProperties": {"type": "integer"}}},
    "Project": {"type": "object", "required": ["id", "account_id", "name", "status"],
                "properties": {"id": {"type": "string"}, "account_id": {"type": "string"},
                               "name": {"type": "string"},
                               "status": {"enum": ["active", "disabled"]},
                               "policy_id": {"type": ["string", "null"]},
                               "budget": {"$ref": "#/components/schemas/Quota"},
                               "user_quota": {"$ref": "#/components/schemas/Quota"},
                               "allow_inline_policy": {"type": "boolean"}}},
    "ProjectCreate": {"type": "object", "required": ["id", "account_id"], "properties": {
        "id": {"type": "string"}, "account_id": {"type": "string"}, "name": {"type": "string"},
        "status": {"enum": ["active", "disabled"]}, "policy_id": {"type": ["string", "null"]},
        "budget": {"$ref": "#/components/schemas/Quota"},
        "user_quota": {"$ref": "#/components/schemas/Quota"},
        "allow_inline_policy": {"type": "boolean"}}},
    "ProjectUpdate": {"type": "object", "properties": {
        "name": {"type": "string"}, "status": {"enum": ["active", "disabled"]},
        "policy_id": {"type": ["string", "null"]},
        "budget": {"$ref": "#/components/schemas/Quota"},
        "user_quota": {"$ref": "#/components/schemas/Quota"},
        "allow_inline_policy": {"type": "boolean"}}},
    "Key": {"type": "object", "required": ["id", "account_id", "key_preview", "revoked"],
            "properties": {"id": {"type": "string"}, "account_id": {"type": "string"},
                           "project_id": {"type": ["string", "null"]},
                           "label": {"type": "string"}, "key_preview": {"type": "string"},
                           "revoked": {"type": "boolean"}, "created_at": {"type": "string"},
                           "key": {"type": "string",
                                   "description": "the plaintext, only in the create answer"}}},
    "KeyCreate": {"type": "object", "properties": {
        "account_id": {"type": "string"}, "project_id": {"type": "string"},
        "label": {"type": "string"}}},
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _list_of(name: str) -> dict[str, Any]:
    return {"type": "object", "required": ["data"],
            "properties": {"object": {"const": "list"},
                           "data": {"type": "array", "items": _ref(name)}}}


def _op(summary: str, ok: dict[str, Any], *, status: str = "200", body: Any = None,
        errors: tuple[str, ...] = ("400", "401", "403"), admin: bool = True,
        params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    responses: dict[str, Any] = {status: {"description": "OK",
                                          "content": {JSON: {"schema": ok}}}}
    # Every management route may also answer: a body too slow (408), a bug of ours logged with
    # the request id (500), the worker at its request cap (503).
    extra = (("408",) if body is not None else ()) + ("500", "503") if admin else ()
    for code in (*errors, *extra):
        responses[code] = {"description": "error", "content": {JSON: {"schema": _ref("Error")}}}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if admin:
        operation["security"] = [{"admin": []}]
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    if params:
        operation["parameters"] = params
    return operation


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _api(summary: str, method: str = "post") -> dict[str, Any]:
    """A provider API route: the provider's own request and response schemas pass through."""
    op = _op(summary, _ref("AnyObject"), admin=False,
             body=_ref("AnyObject") if method == "post" else None,
             errors=("400", "401", "403", "404", "409", "413", "429", "502", "504"))
    op["security"] = [{"bearer": []}, {"x-api-key": []}]
    op["responses"]["200"]["content"]["text/event-stream"] = {"schema": {"type": "string"}}
    return {method: op}


def _management_paths() -> dict[str, Any]:
    return {**_policy_paths(), **_project_paths(), **_key_paths(), **_other_paths()}


def _policy_paths() -> dict[str, Any]:
    policy_id, policy_write = _path_param("policy_id"), _ref("PolicyWrite")
    return {
        f"{PREFIX}/policies": {
            "get": _op("List loaded policies and files that fail their check", {
                "type": "object", "required": ["data", "errors"], "properties": {
                    "object": {"const": "list"},
                    "data": {"type": "array", "items": _ref("Policy")},
                    "errors": {"type": "array", "items": _ref("FileProblem")}}}),
            "post": _op("Create a policy (checked; refused with diagnostics)", _ref("Policy"),
                        status="201", body=policy_write, errors=("400", "401", "403", "409")),
        },
        f"{PREFIX}/policies/validate": {
            "post": _op("Check a policy and return its diagnostics", {
                "type": "object", "required": ["valid", "diagnostics"], "properties": {
                    "valid": {"type": "boolean"}, "policy_id": {"type": ["string", "null"]},
                    "diagnostics": {"type": "array", "items": _ref("Diagnostic")}}},
                body=policy_write)},
        f"{PREFIX}/policies/{{policy_id}}": {
            "get": _op("Read a policy and its source", _ref("Policy"), params=[policy_id],
                       errors=("401", "403", "404")),
            "put": _op("Update a policy (a new revision)", _ref("Policy"), body=policy_write,
                       params=[policy_id], errors=("400", "401", "403", "404", "409")),
            "delete": _op("Delete a policy (removes its file)", {
                "type": "object", "required": ["policy_id", "deleted"], "properties": {
                    "policy_id": {"type": "string"}, "deleted": {"type": "boolean"},
                    "revision": {"type": ["integer", "null"]}}},
                params=[policy_id], errors=("401", "403", "404")),
        },
        f"{PREFIX}/policies/{{policy_id}}/revisions": {
            "get": _op("List a policy's revisions, oldest first", _list_of("Revision"),
                       params=[policy_id], errors=("401", "403", "404"))},
    }


def _project_paths() -> dict[str, Any]:
    project_id = _path_param("project_id")
    return {
        f"{PREFIX}/projects": {
            "get": _op("List projects", _list_of("Project"),
                       params=[_query("account_id", {"type": "string"})]),
            "post": _op("Create a project", _ref("Project"), status="201",
                        body=_ref("ProjectCreate"), errors=("400", "401", "403", "409")),
        },
        f"{PREFIX}/projects/{{project_id}}": {
            "get": _op("Read a project", _ref("Project"), params=[project_id],
                       errors=("401", "403", "404")),
            "patch": _op("Update a project (link a policy, budget, user quota, status)",
                         _ref("Project"), body=_ref("ProjectUpdate"), params=[project_id],
                         errors=("400", "401", "403", "404")),
        },
        f"{PREFIX}/projects/{{project_id}}/usage": {
            "get": _op("Current quota counters of a project and its top users", {
                "type": "object", "required": ["project_id", "project", "users"],
                "properties": {"project_id": {"type": "string"},
                               "project": {"type": "array"}, "users": {"type": "array"}}},
                params=[project_id, _query("top", {"type": "integer", "minimum": 1,
                                                   "maximum": 1000})],
                errors=("400", "401", "403", "404"))},
    }


def _key_paths() -> dict[str, Any]:
    key_id = _path_param("key_id")
    return {
        f"{PREFIX}/keys": {
            "get": _op("List keys (previews only)", _list_of("Key"),
                       params=[_query("account_id", {"type": "string"}),
                               _query("project_id", {"type": "string"})]),
            "post": _op("Create a key; the plaintext is returned once", _ref("Key"),
                        status="201", body=_ref("KeyCreate"),
                        errors=("400", "401", "403", "404")),
        },
        f"{PREFIX}/keys/{{key_id}}/revoke": {
            "post": _op("Revoke a key (takes effect on the next request)", _ref("Key"),
                        params=[key_id], errors=("401", "403", "404"))},
    }


def _other_paths() -> dict[str, Any]:
    return {
        f"{PREFIX}/simulate": {
            "post": _op("The decision for a request body, without the upstream", {
                "type": "object", "required": ["object", "policy"], "properties": {
                    "object": {"const": "policy.simulation"}, "policy": {"type": "object"}}},
                body={"type": "object", "required": ["project_id"], "properties": {
                    "project_id": {"type": "string"},
                    "surface": {"enum": ["chat.completions", "messages", "responses"]}}},
                errors=("400", "401", "403", "404", "409"))},
        f"{PREFIX}/history": {
            "get": _op("Stored policy events, newest first", {
                "type": "object", "required": ["data"], "properties": {
                    "data": {"type": "array"}, "next_cursor": {"type": ["string", "null"]},
                    "has_more": {"type": "boolean"}}},
                params=[_query(n, {"type": "string"}) for n in (
                    "project_id", "policy_id", "policy_target", "policy_user", "decision",
                    "event_type", "since", "until", "limit", "cursor")])},
    }


def _api_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/v1/chat/completions": _api("OpenAI chat completions, proxied (compat)"),
        "/v1/responses": _api("OpenAI responses, proxied (compat)"),
        "/v1/messages": _api("Anthropic messages, proxied (compat)"),
        "/v1/messages/count_tokens": _api("Anthropic token count, proxied (compat)"),
        "/v1/models": _api("Models of the upstream (compat)", "get"),
        "/policy/simulate": _api("The decision for a request body, without the upstream"),
    }
    for prefix in ("/policy", "/policy/v1"):
        paths.update({
            f"{prefix}/chat/completions": _api("Chat completions, governed by the project policy"),
            f"{prefix}/responses": _api("Responses, governed by the project policy"),
            f"{prefix}/messages": _api("Messages, governed by the project policy"),
            f"{prefix}/messages/count_tokens": _api("Token count (Policy Gateway plans)"),
            f"{prefix}/models": _api("Models (Policy Gateway plans)", "get"),
        })
    return paths


def _health_paths() -> dict[str, Any]:
    status = {"type": "object", "required": ["status"],
              "properties": {"status": {"type": "string"}}}
    codes = {"type": "array", "items": {"type": "string"}}
    readiness = {"type": "object", "required": ["status"], "properties": {
        "status": {"enum": ["ready", "not_ready"]}, "reasons": codes, "degraded": codes,
        # With the admin credential only:
        "database": {"type": "string"}, "shutting_down": {"type": "boolean"},
        "unavailable_policies": codes,
        "policy_errors": {"type": "array", "items": {"type": "object"}}}}
    ready = _op("Ready to serve (reason codes; details with the admin credential)", readiness,
                admin=False, errors=())
    ready["responses"]["503"] = {"description": "not ready: the database is unusable, a "
                                 "linked policy has nothing in force, or shutting down",
                                 "content": {JSON: {"schema": readiness}}}
    return {
        "/healthz": {"get": _op("Alive", status, admin=False, errors=())},
        "/readyz": {"get": ready},
        "/openapi.json": {"get": _op("This document", {"type": "object"}, admin=False,
                                     errors=())},
        "/metrics": {"get": {"summary": "Metrics in the Prometheus text format", "responses": {
            "200": {"description": "OK", "content": {"text/plain": {
                "schema": {"type": "string"}}}}}}},
    }


def build_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Policy Gateway", "version": "0.1.0",
                 "description": "Transparent /v1 proxy, governed /policy surface, and the "
                                "management API (admin credential) of the LLM policy gateway."},
        "paths": {**_api_paths(), **_management_paths(), **_health_paths()},
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "admin": {"type": "http", "scheme": "bearer",
                          "description": "the [admin] token, or a JWT with the admin role"},
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "an API key (ak_...) or a JWT"},
                "x-api-key": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }


def register(app: Quart) -> None:
    document = build_document()

    @app.get("/openapi.json")
    async def openapi_json() -> Response:
        import orjson

        return Response(orjson.dumps(document), status=200, content_type=JSON)
