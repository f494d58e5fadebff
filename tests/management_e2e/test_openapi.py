"""`GET /openapi.json`: the document lists exactly the routes the app serves, and the
management API keeps to it under schemathesis (no 500, no response outside the schema)."""

from __future__ import annotations

import re

import httpx2
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import ADMIN_TOKEN, PREFIX

#: Methods that frameworks add by themselves to every route.
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}


def _served_routes(app) -> set[tuple[str, str]]:
    """(METHOD, /path/{param}) of every route: quart's url map and the fast API routes."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":  # quart's built-in static files; the app has none
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        routes |= {(method, path) for method in rule.methods - IMPLICIT_METHODS}
    asgi = app.asgi_app
    while not hasattr(asgi, "_routes"):  # middlewares wrapped around the fast routes
        asgi = asgi._fallback if hasattr(asgi, "_fallback") else asgi.app
    for path, by_method in asgi._routes.items():
        routes |= {(method, path) for method in by_method}
    return routes


def test_the_document_lists_exactly_the_served_routes(managed):
    document = httpx2.get(managed.url + "/openapi.json", timeout=10).json()
    assert document["openapi"].startswith("3.1")
    documented = {(method.upper(), path) for path, item in document["paths"].items()
                  for method in item}
    served = _served_routes(managed.gateway.app)
    assert documented - served == set(), "documented but not served"
    assert served - documented == set(), "served but not documented"
    management = {path for _, path in served if path.startswith(PREFIX)}
    assert f"{PREFIX}/policies/{{policy_id}}/revisions" in management  # the walk found them


def test_the_management_api_conforms_to_its_schema(managed):
    raw = httpx2.get(managed.url + "/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(raw).include(path_regex=f"^{PREFIX}/")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    checks = [not_a_server_error, response_schema_conformance, status_code_conformance,
              content_type_conformance]
    statuses: list[int] = []
    with requests.Session() as session:
        for operation in operations:
            @given(case=operation.as_strategy())
            @settings(max_examples=20, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def conforms(case: schemathesis.Case) -> None:
                response = case.call(base_url=managed.url, session=session, headers=headers)
                statuses.append(response.status_code)
                case.validate_response(response, checks=checks)

            conforms()
    assert len(statuses) >= 5 * len(operations)
    assert {200, 400, 404} <= set(statuses)  # valid and invalid input both reached the handlers
    # The gateway is still whole after hundreds of generated writes.
    assert httpx2.get(managed.url + "/healthz", timeout=10).status_code == 200
