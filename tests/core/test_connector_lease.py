"""The connector lease (gateway/events/leases.py): one holder at a time per connector, taken when free
or expired, renewed by its holder, released on shutdown; time from an injected clock, on a real
SQLite file shared by two lease objects as two worker processes share it, and on a real
PostgreSQL database as replicas share it (gateway/events/pg_delivery.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.events.leases import ConnectorLease, may_claim

TTL = 15.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "postgres"])
def make_lease(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock):
    """`make(connector, owner)`: a lease in one SQLite file (worker processes of one machine)
    or in one PostgreSQL database (replicas), each owner with its own connection."""
    made: list[ConnectorLease] = []
    pools: list = []

    def make(connector: str, owner: str) -> ConnectorLease:
        if request.param == "postgres":
            from gateway.events.pg_delivery import PgConnectorLease
            from gateway.storage.postgres import Postgres
            from gateway.storage.settings import PostgresSettings

            url = request.getfixturevalue("postgres_url")
            pools.append(Postgres(PostgresSettings(url=url, pool_min_size=0, pool_max_size=1)))
            lease: ConnectorLease = PgConnectorLease(pools[-1], connector, owner, ttl=TTL,
                                                     clock=clock)
        else:
            lease = ConnectorLease(str(tmp_path / "gateway.db"), connector, owner, ttl=TTL,
                                   clock=clock)
        made.append(lease)
        return lease

    yield make
    for lease in made:
        lease.close()
    for pool in pools:
        pool.close()


@pytest.fixture
def pair(make_lease):
    return make_lease("audit", "worker-a"), make_lease("audit", "worker-b")


def test_may_claim_rules() -> None:
    assert may_claim(None, None, "a", 10.0)
    assert may_claim("a", 20.0, "a", 10.0)
    assert not may_claim("b", 20.0, "a", 10.0)
    assert may_claim("b", 10.0, "a", 10.0)  # expired at exactly its deadline


def test_only_one_of_two_owners_holds_it(pair, clock: Clock) -> None:
    first, second = pair
    assert first.claim()
    assert not second.claim()
    assert (first.held(), second.held()) == (True, False)
    assert first.holder() == ("worker-a", clock.now + TTL)


def test_the_holder_renews_and_keeps_it_past_the_first_deadline(pair, clock: Clock) -> None:
    first, second = pair
    assert first.claim()
    clock.now += TTL / 3
    assert first.claim()
    renewed_until = clock.now + TTL
    clock.now += TTL * 2 / 3 + 1  # past the first deadline, before the renewed one
    assert first.held()
    assert not second.claim()
    assert second.holder() == ("worker-a", renewed_until)


def test_another_owner_takes_over_an_expired_lease(pair, clock: Clock) -> None:
    first, second = pair
    assert first.claim()
    clock.now += TTL - 0.001
    assert not second.claim()
    clock.now += 0.001
    assert not first.held()
    assert second.claim()
    assert not first.claim()  # the old holder, back too late, does not get it again
    assert first.holder() == ("worker-b", clock.now + TTL)


def test_release_lets_another_owner_take_it_at_once(pair, clock: Clock) -> None:
    first, second = pair
    assert first.claim()
    first.release()
    assert not first.held()
    assert first.holder() is None
    assert second.claim()


def test_release_leaves_a_lease_taken_by_another_owner_alone(pair, clock: Clock) -> None:
    first, second = pair
    assert first.claim()
    clock.now += TTL
    assert second.claim()
    first.release()
    assert second.holder() == ("worker-b", clock.now + TTL)
    assert second.held()


def test_leases_of_different_connectors_are_independent(make_lease) -> None:
    audit = make_lease("audit", "worker-a")
    hook = make_lease("hook", "worker-b")
    assert audit.claim()
    assert hook.claim()
    assert not make_lease("audit", "worker-b").claim()
