"""Fixtures for the governed surface: one gateway with projects, policies, keys and JWT users.

`governed` (session) serves the repository's example policies plus the test policies in
`tests/policy_e2e/policies/` (output rules enforced and in shadow, escalation, rewrite and
summary with default and own instructions, as `.pol` and as JSON documents; tool rules for
the tool calls models issue, enforced and in shadow), with both
providers at the shared mock upstream. It has a `control` account owning one project per
policy, keys bound to each project, an unbound key, a `free` account's key, a second account
with its own project, and HS256 JWT users.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from e2e.harness import RunningGateway, mock_providers, start_gateway, stop_gateway
from mock_upstream import MockUpstream

from gateway.db import open_database
from gateway.identity.projects import ProjectStore

HERE = Path(__file__).parent
REPO_POLICIES = HERE.parents[1] / "policies"
JWT_SECRET = "test-jwt-secret-" + "x" * 32
JWT_AUDIENCE = "policy-gateway-tests"

#: project id -> linked policy id (None: not linked)
PROJECTS: dict[str, str | None] = {
    "proj_support": "support_bot",
    "proj_pii": "pii_redaction",
    "proj_competitor": "competitor_mentions",
    "proj_hard": "hard_refuse",
    "proj_staged": "jailbreak_filter",
    "proj_output": "output_guard",
    "proj_shadow": "shadow_guard",
    "proj_escalate": "escalation",
    "proj_unlinked": None,
    "proj_disabled": "support_bot",
    "proj_inline": "support_bot",
    "proj_instructed": "instructed",
    "proj_json_rewrite": "json_rewrite",
    "proj_json_summary": "json_summary",
    "proj_model_tools": "model_tools",
    "proj_model_tools_shadow": "model_tools_shadow",
    "proj_known_mcp": "known_mcp_servers",
}


@dataclass
class Governed:
    gateway: RunningGateway
    #: project id -> plaintext key bound to that project
    keys: dict[str, str] = field(default_factory=dict)
    unbound_key: str = ""
    free_key: str = ""
    other_account_key: str = ""
    other_project: str = "proj_other_account"
    account_id: str = ""
    other_account_id: str = ""
    escalation_url: str = ""

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def state(self) -> Any:
        return self.gateway.app.extensions["gateway"]

    def events(self) -> list[dict[str, Any]]:
        return list(self.state.events.events)

    def token(self, sub: str = "user-1", *, account: str | None = None,
              projects: Any = None, secret: str = JWT_SECRET, algorithm: str = "HS256",
              expires_in: float = 300, **claims: Any) -> str:
        payload: dict[str, Any] = {"sub": sub, "org_id": account or self.account_id,
                                   "aud": JWT_AUDIENCE, "exp": int(time.time() + expires_in)}
        if projects is not None:
            payload["projects"] = projects
        payload.update(claims)
        return jwt.encode(payload, secret, algorithm=algorithm)


@pytest.fixture(scope="session")
def governed(mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Governed]:
    root = tmp_path_factory.mktemp("governed")
    policies = root / "policies"
    policies.mkdir()
    for path in REPO_POLICIES.glob("*.pol"):
        shutil.copy(path, policies / path.name)
    escalation_url = mock_upstream.url + "/escalations"
    for path in (*(HERE / "policies").glob("*.pol"), *(HERE / "policies").glob("*.json")):
        text = path.read_text().replace("ESCALATION_URL", escalation_url)
        (policies / path.name).write_text(text)
    config = {
        "providers": mock_providers(mock_upstream.url),
        "policies": {"directory": str(policies)},
        # Provider-run MCP tools are known by these URLs (never contacted: the mock answers).
        "mcp": {"servers": {"wiki": {"url": "https://wiki.example/mcp"},
                            "docs": {"url": "https://docs.example/mcp"}}},
        # The escalation policy's URL is listed: notices go to it through its connector.
        "escalation": {"allowed_urls": [escalation_url], "retry_initial": 0.05},
        "jwt": {"algorithm": "HS256", "secret": JWT_SECRET, "audience": JWT_AUDIENCE,
                "grants": {"granted-user": ["proj_support"]}},
    }
    running = start_gateway(root, config, plan="control")
    store = running.store
    projects = ProjectStore(open_database(running.db_path))
    account = running.account
    governed = Governed(gateway=running, account_id=account.id, escalation_url=escalation_url)
    for project_id, policy_id in PROJECTS.items():
        projects.create(project_id=project_id, account_id=account.id,
                        name=project_id.replace("proj_", "").title(), policy_id=policy_id,
                        allow_inline_policy=project_id == "proj_inline")
        governed.keys[project_id] = store.create_key(account.id, project_id=project_id)[1]
    projects.update("proj_disabled", status="disabled")
    governed.unbound_key = store.create_key(account.id, label="unbound")[1]
    free = store.create_account("free-tier", "free")
    governed.free_key = store.create_key(free.id)[1]
    other = store.create_account("other", "control")
    governed.other_account_id = other.id
    projects.create(project_id=governed.other_project, account_id=other.id, name="Other",
                    policy_id="support_bot")
    governed.other_account_key = store.create_key(other.id,
                                                  project_id=governed.other_project)[1]
    yield governed
    stop_gateway(running)
