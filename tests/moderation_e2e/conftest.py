"""Fixtures: the mock moderation upstream, and gateways whose `[moderation]` points at it,
each with one project governed by `tests/moderation_e2e/policies/<policy>.pol`."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e.harness import RunningGateway, mock_providers, start_gateway, stop_gateway
from mock_upstream import MockUpstream

from gateway.db import open_database
from gateway.identity.projects import ProjectStore
from tests.moderation_e2e.mock_moderation import MockModeration

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def moderation_upstream() -> Iterator[MockModeration]:
    server = MockModeration().start()
    yield server
    server.stop()


@pytest.fixture
def moderation(moderation_upstream: MockModeration) -> MockModeration:
    moderation_upstream.reset()
    return moderation_upstream


@dataclass
class ModeratedGateway:
    gateway: RunningGateway
    key: str

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def state(self) -> Any:
        return self.gateway.app.extensions["gateway"]

    def events(self) -> list[dict[str, Any]]:
        return [e for e in self.state.events.events if e["event_type"] == "enforcement"]


Factory = Callable[..., ModeratedGateway]


@pytest.fixture
def moderated(mock_upstream: MockUpstream, moderation: MockModeration, tmp_path: Path
              ) -> Iterator[Factory]:
    """`make(moderation_section, policy="categories", **config)`: a gateway (with the other
    config sections given) and a key of a project governed by that policy."""
    started: list[RunningGateway] = []

    def make(section: dict[str, Any], policy: str = "categories", **config: Any
             ) -> ModeratedGateway:
        root = tmp_path / f"gw{len(started)}"
        (root / "policies").mkdir(parents=True)
        shutil.copy(HERE / "policies" / f"{policy}.pol", root / "policies")
        running = start_gateway(root, {
            "providers": mock_providers(mock_upstream.url),
            "policies": {"directory": str(root / "policies")},
            "moderation": section, **config}, plan="control")
        started.append(running)
        ProjectStore(open_database(running.db_path)).create(
            project_id="proj_mod", account_id=running.account.id, name="Moderated",
            policy_id=policy)
        key = running.store.create_key(running.account.id, project_id="proj_mod")[1]
        return ModeratedGateway(running, key)

    yield make
    for running in started:
        stop_gateway(running)
