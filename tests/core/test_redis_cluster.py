"""The Redis store, the rollout windows and the usage report on a real 3-node Redis Cluster:
every script's keys share one hash slot (no CROSSSLOT), and `[redis] cluster = true` finds the
nodes from one seed."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis_server import RedisServer

import dsl
from dsl import QuotaLimit
from gateway.policy.rollout_state import RedisRolloutState
from gateway.quota.limits import QuotaRefused, QuotaRequest
from gateway.quota.redis import RedisQuotaStore
from gateway.redis_link import RedisLink, RedisSettings

ROLLBACK = """policy v1 "x" { default allow rollout { otherwise enforced auto_rollback {
  enabled true threshold_pct 10 min_requests 2 window_minutes 1 cooldown_minutes 1
  rollback_decisions refuse } } }"""


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too: below the ephemeral range."""
    for _ in range(200):
        port = random.randint(20000, 30000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class ClusterNode(RedisServer):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory, cluster_port())

    def arguments(self) -> list[str]:
        return ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    root = tmp_path_factory.mktemp("cluster")
    nodes = [ClusterNode(root / f"node{i}") for i in range(3)]
    try:
        for node in nodes:
            node.start()
        cli = shutil.which("redis-cli")
        assert cli is not None, "redis-cli comes with redis-server (Debian: redis-tools)"
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True,
                       capture_output=True, timeout=60)
        _wait_until_every_node_says_ok(cli, nodes)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def _wait_until_every_node_says_ok(cli: str, nodes: list[ClusterNode]) -> None:
    """`--cluster create` returns before every node has learnt the slot map; until then a
    client may be told CLUSTERDOWN. Bounded: a cluster that never forms fails the fixture."""
    deadline = time.monotonic() + 30
    while True:
        states = [subprocess.run([cli, "-p", str(n.port), "cluster", "info"], capture_output=True,
                                 text=True, timeout=10).stdout for n in nodes]
        if all("cluster_state:ok" in state for state in states):
            return
        assert time.monotonic() < deadline, f"the cluster did not form: {states}"
        time.sleep(0.1)


async def test_quotas_rollout_and_usage_work_on_a_cluster(cluster: list[RedisServer],
                                                          tmp_path: Path) -> None:
    link = RedisLink(RedisSettings(host="127.0.0.1", port=cluster[0].port, cluster=True,
                                   key_prefix="c:"))
    store = RedisQuotaStore(link)
    admitted = 0
    projects = ("p1", "p2", "p3", "p4", "odd}{id", "x" * 300)  # spread over the nodes
    for project in projects:
        for attempt in range(4):
            try:
                reservation = await store.admit(QuotaRequest(
                    project, f"u{attempt % 2}", 10,
                    project_limits=(QuotaLimit("requests", "daily", 3),),
                    user_limits=(QuotaLimit("tokens", "hour", 100),)))
            except QuotaRefused:
                continue
            admitted += 1
            await store.settle(reservation, 5, 5)
    assert admitted == 3 * len(projects)
    assert await store.expire("p2") == 0
    report = await store.usage_report("p1", datetime.now(UTC))
    assert [(c["unit"], c["used"]) for c in report["project"]] == [("requests", 3)]
    assert report["open_reservations"] == 0

    state = RedisRolloutState(link)
    auto = dsl.compile_policy(ROLLBACK).rollout.auto_rollback
    assert auto is not None
    for _ in range(2):
        state.record("x", 1, auto, True, 10.0)
    await state.sync()
    tripped = state.rollback("x", 1, float("-inf"))
    assert tripped is not None and tripped.announce and tripped.total == 2
    await link.aclose()
