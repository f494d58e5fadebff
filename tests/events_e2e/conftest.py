"""Fixture `make_events_gateway(**config)`: a governed gateway for the durable-events tests.

It starts (through `gateway_factory`, so it is stopped after the test) a gateway with the
repository's policies plus the escalation test policy, a `control` account, projects
`proj_support` (support_bot), `proj_pii` (pii_redaction) and `proj_escalate` (escalation), one
key bound to each, and the admin token `ADMIN_TOKEN`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from e2e.harness import (
    GatewayFactory,
    RunningGateway,
    mock_providers,
    start_gateway,
    stop_gateway,
)
from events_support import ADMIN_TOKEN, ESCALATION_POLICY, PROJECTS, REPO_POLICIES, EventsGateway
from mock_upstream import MockUpstream

from gateway.identity.projects import ProjectStore


@pytest.fixture
def events_backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The `[database]` keys of the event store: SQLite unless a module parametrises this
    fixture (indirect) with "postgres", which puts events in a fresh PostgreSQL database."""
    if getattr(request, "param", "sqlite") == "postgres":
        return {"url": request.getfixturevalue("postgres_url")}
    return {}


def wait_until_key_answers(url: str, key: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx2.get(url + "/v1/models", headers={"authorization": f"Bearer {key}"})
        if answer.status_code != 401 or time.monotonic() > deadline:
            assert answer.status_code == 200, answer.text
            return
        time.sleep(0.05)


@pytest.fixture
def make_events_gateway(events_backend: dict[str, Any], gateway_factory: GatewayFactory,
                        mock_upstream: MockUpstream, tmp_path: Path
                        ) -> Callable[..., EventsGateway]:
    # `events_backend` first: its database is made before the gateways and dropped after
    # they stopped (a gateway stopping on a dropped database waits for connections).
    counter = iter(range(1000))

    def make(**config: Any) -> EventsGateway:
        if events_backend:
            config = {"database": events_backend, **config}
        policies = tmp_path / f"policies{next(counter)}"
        shutil.copytree(REPO_POLICIES, policies)
        (policies / "escalation.pol").write_text(ESCALATION_POLICY.read_text().replace(
            "ESCALATION_URL", mock_upstream.url + "/escalations"))
        escalation = {"allowed_urls": [mock_upstream.url + "/escalations"]}
        running = gateway_factory({"policies": {"directory": str(policies)},
                                   "escalation": escalation,
                                   "admin": {"token": ADMIN_TOKEN}, **config}, plan="control")
        projects = ProjectStore(running.store.db)  # where the gateway reads them
        made = EventsGateway(gateway=running, config={
            "policies": {"directory": str(policies)}, "admin": {"token": ADMIN_TOKEN},
            "escalation": escalation, "providers": mock_providers(mock_upstream.url),
            **config})
        for project_id, policy_id in PROJECTS.items():
            projects.create(project_id=project_id, account_id=running.account.id,
                            name=project_id.removeprefix("proj_").title(), policy_id=policy_id)
            made.keys[project_id] = running.store.create_key(running.account.id,
                                                             project_id=project_id)[1]
        if "url" in config.get("database", {}):
            # PostgreSQL: the gateway sees identity changes within its poll interval.
            wait_until_key_answers(running.url, made.keys[project_id])
        return made

    return make


@pytest.fixture
def restart_events_gateway() -> Iterator[Callable[[EventsGateway], EventsGateway]]:
    """`restart(stopped)`: a new gateway on the stopped one's database and configuration."""
    started: list[RunningGateway] = []

    def restart(stopped: EventsGateway) -> EventsGateway:
        running = start_gateway(stopped.db_path.parent, stopped.config, plan="control")
        started.append(running)
        return EventsGateway(gateway=running, keys=dict(stopped.keys), config=stopped.config)

    yield restart
    for running in started:
        stop_gateway(running)
