"""Three replicas with separate data directories sharing one PostgreSQL and one Redis: keys,
projects and policies written through one replica are in force on the others within a second,
and PostgreSQL going down mid-load leaves the request path serving from memory.

Each replica is its own `python -m gateway serve` with its own data directory and SQLite file;
`GATEWAY_DATABASE_URL` points all three at one PostgreSQL database, and they share the admin
token as the replicas of one deployment do. The timings measured here are printed (`-s`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
import trio
from mock_upstream import MockUpstream
from postgres_server import MIGRATED_TEMPLATE, PostgresServer
from quota_e2e.conftest import Workers, start_workers, stop_workers
from redis_server import RedisServer

from .conftest import redis_config
from .test_replica_quotas import chat, scenario

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "pg-replicas-admin-token-0123456789abcdef"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
API = "/api/policy-gateway"
GUARD = '''policy v1 "pg_guard" {{
  name "PG guard"
  default allow
  denylist banned = ["{word}"]
  rule banned_words {{
    when last_user contains any of banned
    then refuse reason BANNED
  }}
}}
'''


@dataclass
class PgReplicas:
    postgres: PostgresServer
    database_url: str
    members: list[Workers]

    @property
    def urls(self) -> list[str]:
        return [member.url for member in self.members]


@pytest.fixture(scope="module")
def pg_replicas(mock_upstream: MockUpstream, postgres_server: PostgresServer,
                redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[PgReplicas]:
    name = f"replicas_{os.getpid()}"
    url = postgres_server.create_database(name, MIGRATED_TEMPLATE)
    root = tmp_path_factory.mktemp("pg-replicas")
    members: list[Workers] = []
    with pytest.MonkeyPatch.context() as patch:  # read by the CLI and serve of each replica
        patch.setenv("GATEWAY_DATABASE_URL", url)
        patch.setenv("GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
        try:
            for index in range(3):
                members.append(start_workers(root / f"replica{index}", mock_upstream.url,
                                             processes=1,
                                             extra_config=redis_config(redis_server),
                                             account_name=f"pg-replica-{index}"))
            yield PgReplicas(postgres_server, url, members)
        finally:
            for member in members:
                if member.process.poll() is not None:  # died during the tests: say why
                    log = member.config_path.parent / "gateway.log"
                    print(f"replica {member.url} exited:\n{log.read_text()[-4000:]}")
                stop_workers(member)
    if not postgres_server.running():
        postgres_server.start()
    postgres_server.drop_database(name)


def _message(text: str) -> dict[str, Any]:
    return chat(messages=[{"role": "user", "content": text}])


async def _call(client: httpx2.AsyncClient, url: str, key: str, text: str = "hello"
                ) -> httpx2.Response:
    return await client.post(f"{url}/policy/chat/completions", json=_message(text),
                             headers={"authorization": f"Bearer {key}", **scenario()})


#: Upper bound on a change reaching another replica: within a second on an idle machine (each
#: replica polls every 250 ms), stretched on a loaded 2-core CI machine running three replicas
#: and PostgreSQL; a replica that stopped following never gets there.
PROPAGATION = 5.0


async def _until(check: Any, within: float) -> float:
    """Seconds until `await check()` is true; fails after `within` seconds."""
    started = time.monotonic()
    with trio.fail_after(within):
        while True:
            if await check():
                return time.monotonic() - started
            await trio.sleep(0.01)


async def _project(client: httpx2.AsyncClient, replicas: PgReplicas, policy: str = "quota_open"
                   ) -> tuple[str, str, str]:
    """A project and a key made through replica A's management API: (project, key id, key)."""
    a = replicas.members[0]
    project_id = f"proj_pg_{time.monotonic_ns()}"
    created = await client.post(f"{a.url}{API}/projects", headers=ADMIN, json={
        "id": project_id, "account_id": a.account_id, "policy_id": policy})
    assert created.status_code == 201, created.text
    key = await client.post(f"{a.url}{API}/keys", headers=ADMIN, json={"project_id": project_id})
    assert key.status_code == 201, key.text
    return project_id, key.json()["id"], key.json()["key"]


async def test_a_key_made_on_a_answers_on_b_and_c_and_revoked_on_b_fails_on_a_within_1s(
        pg_replicas: PgReplicas, mock: MockUpstream) -> None:
    a, b, c = pg_replicas.urls
    async with httpx2.AsyncClient(timeout=30) as client:
        _, key_id, key = await _project(client, pg_replicas)
        assert (await _call(client, a, key)).status_code == 200  # read-your-writes on A
        for url in (b, c):
            async def answers(url: str = url) -> bool:
                return (await _call(client, url, key)).status_code == 200
            took = await _until(answers, PROPAGATION)
            print(f"key created on A answered on {url} after {took * 1000:.0f} ms")

        revoked = await client.post(f"{b}{API}/keys/{key_id}/revoke", headers=ADMIN)
        assert revoked.status_code == 200 and revoked.json()["revoked"] is True
        refused_on_b = await _call(client, b, key)
        assert refused_on_b.status_code == 401

        for url in (a, c):  # each replica polls on its own schedule: each within 1 s
            async def refused(url: str = url) -> bool:
                answer = await _call(client, url, key)
                assert answer.status_code in (200, 401)
                return answer.status_code == 401 and (
                    answer.json()["error"]["code"] == "api_key_revoked")
            took = await _until(refused, PROPAGATION)
            print(f"key revoked on B refused on {url} after {took * 1000:.0f} ms")


async def test_a_policy_updated_through_a_is_in_force_on_c_within_the_interval(
        pg_replicas: PgReplicas, mock: MockUpstream) -> None:
    a, _, c = pg_replicas.urls
    async with httpx2.AsyncClient(timeout=30) as client:
        made = await client.post(f"{a}{API}/policies", headers=ADMIN,
                                 json={"source": GUARD.format(word="pineapple")})
        assert made.status_code in (201, 409), made.text
        if made.status_code == 409:  # a rerun in the same database: start from pineapple
            put = await client.put(f"{a}{API}/policies/pg_guard", headers=ADMIN,
                                   json={"source": GUARD.format(word="pineapple")})
            assert put.status_code == 200
        _, _, key = await _project(client, pg_replicas, policy="pg_guard")

        async def refuses(word: str, url: str = c) -> bool:
            return (await _call(client, url, key, f"a {word} pie")).status_code == 403

        took = await _until(lambda: refuses("pineapple"), PROPAGATION)
        print(f"policy created on A in force on C after {took * 1000:.0f} ms")
        updated = await client.put(f"{a}{API}/policies/pg_guard", headers=ADMIN,
                                   json={"source": GUARD.format(word="mango")})
        assert updated.status_code == 200, updated.text
        revision = updated.json()["revision"]
        took = await _until(lambda: refuses("mango"), PROPAGATION)
        print(f"policy updated on A in force on C after {took * 1000:.0f} ms")
        assert not await refuses("pineapple")
        listed = (await client.get(f"{c}{API}/policies/pg_guard", headers=ADMIN)).json()
        assert listed["revision"] == revision and "mango" in listed["source"]
        history = (await client.get(f"{c}{API}/policies/pg_guard/revisions",
                                    headers=ADMIN)).json()["data"]
        assert [r["revision"] for r in history] == list(range(1, revision + 1))

        # The CLI of another machine (replica C's configuration) writes to the same database.
        source = pg_replicas.members[2].config_path.parent / "upload.pol"
        source.write_text(GUARD.format(word="papaya"))
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("GATEWAY_DATABASE_URL", pg_replicas.database_url)
            updated_by_cli = await trio.to_thread.run_sync(
                pg_replicas.members[2].cli, "policies", "update", "pg_guard", str(source))
        assert updated_by_cli["revision"] == revision + 1
        took = await _until(lambda: refuses("papaya", a), PROPAGATION)
        print(f"policy updated by the CLI in force on A after {took * 1000:.0f} ms")


async def test_a_file_added_to_a_replicas_policies_directory_reaches_every_replica(
        pg_replicas: PgReplicas, mock: MockUpstream) -> None:
    """GitOps: replica A's configured directory is imported into the database on change."""
    a, b, c = pg_replicas.urls
    directory = pg_replicas.members[0].config_path.parent / "policies"
    (directory / "gitops_guard.pol").write_text(
        GUARD.format(word="kiwi").replace('"pg_guard"', '"gitops_guard"'))
    async with httpx2.AsyncClient(timeout=30) as client:
        async def loaded_on_c() -> bool:
            answer = await client.get(f"{c}{API}/policies/gitops_guard", headers=ADMIN)
            return answer.status_code == 200
        took = await _until(loaded_on_c, PROPAGATION)
        print(f"policy file added to A's directory in force on C after {took * 1000:.0f} ms")
        _, _, key = await _project(client, pg_replicas, policy="gitops_guard")
        for url in (b, c):
            async def refuses(url: str = url) -> bool:
                return (await _call(client, url, key, "a kiwi")).status_code == 403
            await _until(refuses, PROPAGATION)
        # An API edit of the same policy stays until the directory's file changes again.
        edited = await client.put(f"{b}{API}/policies/gitops_guard", headers=ADMIN, json={
            "source": GUARD.format(word="plum").replace('"pg_guard"', '"gitops_guard"')})
        assert edited.status_code == 200, edited.text
        await _until(lambda: _refused(client, a, key, "plum"), PROPAGATION)
        await trio.sleep(0.6)  # A's directory watcher ran meanwhile: its file did not change
        assert await _refused(client, c, key, "plum")


async def _refused(client: httpx2.AsyncClient, url: str, key: str, text: str) -> bool:
    return (await _call(client, url, key, text)).status_code == 403


async def test_postgres_down_mid_load_keeps_serving_from_memory(
        pg_replicas: PgReplicas, mock: MockUpstream) -> None:
    urls = pg_replicas.urls
    async with httpx2.AsyncClient(timeout=30) as client:
        _, _, key = await _project(client, pg_replicas)
        for url in urls:
            await _until(lambda url=url: _ok(client, url, key), PROPAGATION)
        statuses: list[int] = []

        async def load() -> None:
            while True:
                for url in urls:
                    statuses.append((await _call(client, url, key)).status_code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(load)
            await trio.sleep(0.3)
            await trio.to_thread.run_sync(pg_replicas.postgres.stop)
            for url in urls:
                async def degraded(url: str = url) -> bool:
                    ready = await client.get(f"{url}/readyz")
                    assert ready.status_code == 200  # still serving: ready, degraded
                    return "postgres_unavailable" in ready.json().get("degraded", [])
                await _until(degraded, 10.0)
            details = (await client.get(f"{urls[0]}/readyz", headers=ADMIN)).json()
            assert details["dependencies"]["postgres"].startswith("unavailable")
            write = await client.post(f"{urls[1]}{API}/keys", headers=ADMIN,
                                      json={"account_id": pg_replicas.members[1].account_id})
            assert write.status_code == 503
            assert write.json()["error"]["code"] == "database_unavailable"
            # 30 more requests answered with PostgreSQL down, however slow a loaded machine.
            served_before = len(statuses)

            async def served_30_more() -> bool:
                return len(statuses) >= served_before + 30
            await _until(served_30_more, 30.0)
            nursery.cancel_scope.cancel()
        assert set(statuses) == {200}, sorted(set(statuses))

        await trio.to_thread.run_sync(pg_replicas.postgres.start)
        for url in urls:
            async def recovered(url: str = url) -> bool:
                ready = (await client.get(f"{url}/readyz")).json()
                return "postgres_unavailable" not in ready.get("degraded", [])
            await _until(recovered, 10.0)
        _, _, fresh = await _project(client, pg_replicas)
        for url in urls:
            await _until(lambda url=url: _ok(client, url, fresh), PROPAGATION)
    for member in pg_replicas.members:  # said once when it went, once when it came back
        log = (member.config_path.parent / "gateway.log").read_text()
        assert log.count("PostgreSQL does not answer") == 1
        assert log.count("PostgreSQL answers again") == 1


async def _ok(client: httpx2.AsyncClient, url: str, key: str) -> bool:
    return (await _call(client, url, key)).status_code == 200
