"""The quota stores (docs/quotas.md): reserve, settle, release, expiry, window rollover on an
injected clock, exactness, hostile ids. Every test taking `store` or `make_store` runs against the
SQLite store and against the Redis store on a real redis-server; the rest are about SQLite alone."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from quota_stores import SyncRedisStore, counters, stored_subject

from dsl import QuotaLimit
from gateway.errors import QuotaUnavailable
from gateway.quota import sqlite as quota_sqlite
from gateway.quota.limits import QuotaRefused, QuotaRequest, QuotaSettings
from gateway.quota.redis import RedisQuotaStore
from gateway.quota.sqlite import SqliteQuotaStore, subject_key


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2024, 2, 28, 23, 59, 0, tzinfo=UTC))


Store = Any  # SqliteQuotaStore or SyncRedisStore: the same blocking test calls
MakeStore = Callable[..., Store]


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
               ) -> Iterator[MakeStore]:
    """`make(settings=None)`: a store of the parametrised kind; every one made shares the same
    SQLite file or the same (emptied) Redis, as the processes of one deployment do."""
    server = request.getfixturevalue("redis") if request.param == "redis" else None
    made: list[Store] = []

    def make(settings: QuotaSettings | None = None) -> Store:
        s = (SqliteQuotaStore(tmp_path / "gw.db", settings, clock=clock) if server is None
             else SyncRedisStore(server, settings, clock=clock))
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def store(make_store: MakeStore) -> Store:
    return make_store(QuotaSettings(reservation_ttl_seconds=60))


@pytest.fixture
def sqlite_store(tmp_path: Path, clock: Clock) -> Iterator[SqliteQuotaStore]:
    s = SqliteQuotaStore(tmp_path / "gw.db", QuotaSettings(reservation_ttl_seconds=60),
                         clock=clock)
    yield s
    s.close()


def requests(limit: int, window: str = "daily", *, user: int = 0, subject: str = "alice",
             tokens: int = 0) -> QuotaRequest:
    return QuotaRequest(
        "proj", subject, tokens, project_limits=(QuotaLimit("requests", window, limit),),
        user_limits=(QuotaLimit("requests", window, user),) if user else ())


def token_request(limit: int, estimate: int, subject: str = "alice") -> QuotaRequest:
    return QuotaRequest("proj", subject, estimate,
                        project_limits=(QuotaLimit("tokens", "daily", limit),))


def test_no_limits_means_no_database_access(tmp_path: Path) -> None:
    store = SqliteQuotaStore(tmp_path / "never" / "created.db")

    async def run() -> None:
        reservation = await store.admit(QuotaRequest("proj", "alice", 10))
        assert reservation.headers == () and reservation.remaining is None
        await store.settle(reservation, 5, 5)
        await store.release(reservation)

    trio.run(run)
    assert not (tmp_path / "never").exists()


def test_limit_of_n_admits_n_then_refuses(store: Store) -> None:
    for expected_remaining in (2, 1, 0):
        reservation = store.admit_sync(requests(3))
        assert dict(reservation.headers)["x-ratelimit-remaining-requests"] == str(
            expected_remaining)
    with pytest.raises(QuotaRefused) as refused:
        store.admit_sync(requests(3))
    assert refused.value.reason_code == "PROJECT_QUOTA_EXCEEDED"
    # 23:59:00 -> midnight is the daily reset.
    assert refused.value.headers["retry-after"] == "60"
    assert counters(store)[("project", "proj", "requests")] == 3


def test_release_gives_the_request_and_tokens_back(store: Store) -> None:
    request = QuotaRequest("proj", "alice", 40, project_limits=(
        QuotaLimit("requests", "daily", 1), QuotaLimit("tokens", "daily", 1000)))
    reservation = store.admit_sync(request)
    assert counters(store) == {("project", "proj", "requests"): 1,
                               ("project", "proj", "tokens"): 40}
    store.release_sync(reservation.token)
    assert counters(store) == {("project", "proj", "requests"): 0,
                               ("project", "proj", "tokens"): 0}
    store.admit_sync(request)  # the request slot is free again
    store.release_sync(reservation.token)  # a second release of the same one changes nothing
    assert counters(store)[("project", "proj", "requests")] == 1


def test_settlement_replaces_the_estimate_with_real_usage(store: Store) -> None:
    first = store.admit_sync(token_request(1000, estimate=300))
    second = store.admit_sync(token_request(1000, estimate=300))
    store.settle_sync(first.token, 120)
    store.settle_sync(second.token, 450)  # more than estimated: counted all the same
    assert counters(store)[("project", "proj", "tokens")] == 570
    store.settle_sync(second.token, 450)
    if isinstance(store, RedisQuotaStore):
        # A retry (its first reply lost on the network) changes nothing.
        assert counters(store)[("project", "proj", "tokens")] == 570
    else:  # settled once only... then counted as expired usage
        assert counters(store)[("project", "proj", "tokens")] == 1020


def test_token_limit_admits_while_budget_remains(store: Store) -> None:
    store.admit_sync(token_request(1000, estimate=600))
    store.admit_sync(token_request(1000, estimate=600))  # 600 < 1000: admitted, may overrun
    with pytest.raises(QuotaRefused):
        store.admit_sync(token_request(1000, estimate=1))


def test_tightest_limit_wins_between_budget_and_policy(store: Store) -> None:
    request = QuotaRequest("proj", "alice", 0, project_limits=(
        QuotaLimit("requests", "daily", 5), QuotaLimit("requests", "daily", 2)))
    store.admit_sync(request)
    store.admit_sync(request)
    with pytest.raises(QuotaRefused):
        store.admit_sync(request)


def test_user_quota_is_per_subject_within_the_project(store: Store) -> None:
    store.admit_sync(requests(10, user=1, subject="alice"))
    with pytest.raises(QuotaRefused) as refused:
        store.admit_sync(requests(10, user=1, subject="alice"))
    assert refused.value.reason_code == "USER_QUOTA_EXCEEDED"
    store.admit_sync(requests(10, user=1, subject="bob"))
    other_project = QuotaRequest("other", "alice", 0,
                                 user_limits=(QuotaLimit("requests", "daily", 1),))
    store.admit_sync(other_project)
    # The refused attempt reserved nothing, for the project either.
    assert counters(store)[("project", "proj", "requests")] == 2


def test_refusal_reserves_nothing_on_any_counter(store: Store) -> None:
    request = QuotaRequest("proj", "alice", 50, project_limits=(
        QuotaLimit("requests", "daily", 10),), user_limits=(QuotaLimit("tokens", "daily", 50),))
    store.admit_sync(request)
    with pytest.raises(QuotaRefused) as refused:
        store.admit_sync(request)
    assert refused.value.reason_code == "USER_QUOTA_EXCEEDED"
    assert counters(store)[("project", "proj", "requests")] == 1


def test_window_rollover_starts_fresh_counters(store: Store, clock: Clock) -> None:
    store.admit_sync(requests(1, "daily"))
    with pytest.raises(QuotaRefused):
        store.admit_sync(requests(1, "daily"))
    clock.now += timedelta(minutes=1)  # 2024-02-29 00:00: a new day
    store.admit_sync(requests(1, "daily"))
    week = requests(1, "weekly")
    store.settle_sync(store.admit_sync(week).token, 0)  # settled: it outlives its expiry
    clock.now = datetime(2024, 3, 3, 23, 59, 59, tzinfo=UTC)  # Sunday: same week
    with pytest.raises(QuotaRefused) as refused:
        store.admit_sync(week)
    assert refused.value.headers["retry-after"] == "1"
    clock.now = datetime(2024, 3, 4, tzinfo=UTC)  # Monday
    store.admit_sync(week)


def test_monthly_window_of_february(store: Store, clock: Clock) -> None:
    clock.now = datetime(2023, 2, 1, tzinfo=UTC)
    store.settle_sync(store.admit_sync(requests(1, "monthly")).token, 0)
    clock.now = datetime(2023, 2, 28, 23, 0, tzinfo=UTC)
    with pytest.raises(QuotaRefused) as refused:
        store.admit_sync(requests(1, "monthly"))
    assert refused.value.headers["retry-after"] == "3600"
    clock.now = datetime(2023, 3, 1, tzinfo=UTC)
    store.admit_sync(requests(1, "monthly"))


def test_reservations_of_a_dead_process_expire(make_store: MakeStore, clock: Clock) -> None:
    settings = QuotaSettings(reservation_ttl_seconds=60)
    clock.now = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)
    dead = make_store(settings)
    request = QuotaRequest("proj", "alice", 100, project_limits=(
        QuotaLimit("requests", "hour", 1), QuotaLimit("tokens", "hour", 1000)))
    orphan = dead.admit_sync(request)
    dead.close()  # the process dies without settling
    alive = make_store(settings)
    with pytest.raises(QuotaRefused):
        alive.admit_sync(request)
    clock.now += timedelta(seconds=61)  # same hour, past the reservation's expiry
    alive.admit_sync(request)  # the orphan was given back, this one fits
    assert counters(alive)[("project", "proj", "requests")] == 1
    # A settlement arriving after expiry counts what was really used.
    alive.settle_sync(orphan.token, 30)
    assert counters(alive) == {("project", "proj", "requests"): 2,
                               ("project", "proj", "tokens"): 130}
    alive.close()


def test_expire_sync_counts_what_it_gave_back(store: Store, clock: Clock) -> None:
    store.admit_sync(requests(5))
    store.admit_sync(requests(5))
    assert store.expire_sync() == 0
    clock.now += timedelta(seconds=30)
    assert store.expire_sync() == 0
    clock.now += timedelta(seconds=31)
    assert store.expire_sync() == 2
    assert counters(store)[("project", "proj", "requests")] == 0


@pytest.mark.parametrize("subject", ["", " ", "x" * 100_000, "用户-😀", "\ud800lone",
                                     "a'; DROP TABLE quota_counters; --", "\x00nul"])
def test_hostile_subject_ids_get_their_own_counters(store: Store,
                                                    subject: str) -> None:
    store.admit_sync(requests(10, user=1, subject=subject))
    with pytest.raises(QuotaRefused):
        store.admit_sync(requests(10, user=1, subject=subject))
    store.admit_sync(requests(10, user=1, subject="neighbour"))
    rows = counters(store)
    assert rows[("user", stored_subject(store, subject), "requests")] == 1
    assert rows[("user", "neighbour", "requests")] == 1
    assert rows[("project", "proj", "requests")] == 2


def test_long_subjects_with_a_common_prefix_stay_apart() -> None:
    a, b = "x" * 300 + "a", "x" * 300 + "b"
    assert subject_key(a) != subject_key(b)
    assert len(subject_key(a)) < 100
    assert subject_key("short") == "short"


def test_concurrent_stores_on_one_file_admit_exactly_n(make_store: MakeStore) -> None:
    """Two stores (as two worker processes would hold) and 24 threads racing for 10 slots
    (for Redis, 24 tasks on two clients: a glide client serves the event loop that made it)."""
    stores = [make_store() for _ in range(2)]
    if isinstance(stores[0], SyncRedisStore):
        results = trio.run(race, stores, 24)
        assert results.count(True) == 10 and results.count(False) == 14
        return
    admitted: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(24)

    def attempt(index: int) -> None:
        start.wait()
        try:
            stores[index % 2].admit_sync(requests(10))
            ok = True
        except QuotaRefused:
            ok = False
        with lock:
            admitted.append(ok)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert admitted.count(True) == 10 and admitted.count(False) == 14


async def race(stores: list[Any], attempts: int) -> list[bool]:
    results: list[bool] = []

    async def attempt(store: Any) -> None:
        try:
            await store.admit(requests(10))
            results.append(True)
        except QuotaRefused:
            results.append(False)

    async with trio.open_nursery() as nursery:
        for index in range(attempts):
            nursery.start_soon(attempt, stores[index % len(stores)])
    for store in stores:
        await store.link.aclose()
    return results


async def test_async_admission_is_exact_inline_or_in_threads(store: Store) -> None:
    results: list[bool] = []

    async def one() -> None:
        try:
            reservation = await store.admit(requests(5, tokens=7))
        except QuotaRefused:
            results.append(False)
            return
        results.append(True)
        await store.settle(reservation, 3, 4)

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(one)
    assert results.count(True) == 5
    assert counters(store)[("project", "proj", "requests")] == 5


async def test_admission_and_settlement_run_on_the_loop_and_wait_for_the_lock_there(
        sqlite_store: SqliteQuotaStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store = sqlite_store
    hops: list[str] = []
    real_run = store._run

    async def counted_run(fn, *args):  # type: ignore[no-untyped-def]
        hops.append(fn.__name__)
        return await real_run(fn, *args)

    monkeypatch.setattr(store, "_run", counted_run)
    await store.settle(await store.admit(requests(100)), 1, 1)
    assert hops == ["_add_idle_connection"]  # only opening the connection took a thread
    await store.settle(await store.admit(requests(100)), 1, 1)
    assert hops == ["_add_idle_connection"]
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another worker holds the write lock for a while
    ticks = 0

    async def ticker() -> None:  # the loop must stay free while admission waits
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0.001)

    admitted = trio.Event()

    async def admit() -> None:
        await store.admit(requests(100))
        admitted.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        nursery.start_soon(admit)
        await trio.sleep(0.05)
        assert not admitted.is_set() and ticks >= 10  # waiting, without blocking the loop
        other.execute("COMMIT")
        with trio.fail_after(5):
            await admitted.wait()
        nursery.cancel_scope.cancel()
    other.close()
    assert hops == ["_add_idle_connection"]  # it waited on the loop, not in a thread
    assert counters(store)[("project", "proj", "requests")] == 3


async def test_a_write_lock_held_too_long_fails_the_admission_cleanly(
        sqlite_store: SqliteQuotaStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store = sqlite_store
    await store.admit(requests(100))
    monkeypatch.setattr(quota_sqlite, "LOCK_WAIT_SECONDS", 0.1)
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with trio.fail_after(5), pytest.raises(QuotaUnavailable) as refused:
            await store.admit(requests(100))
        assert refused.value.status == 503 and refused.value.headers == {"retry-after": "1"}
    finally:
        other.execute("COMMIT")
        other.close()
    assert counters(store)[("project", "proj", "requests")] == 1  # nothing half-counted


async def test_admission_while_a_thread_holds_the_pooled_connection_opens_another(
        sqlite_store: SqliteQuotaStore) -> None:
    # The checkpoint (and usage reports) take a pooled connection into a thread; admission
    # then opens a second one instead of waiting for the first.
    store = sqlite_store
    await store.admit(requests(100))
    taken = store._connection()  # as a thread would hold it
    try:
        with trio.fail_after(5):
            await store.settle(await store.admit(requests(100)), 1, 1)
    finally:
        with store._lock:
            store._idle.append(taken)
    assert len(store._all) == 2
    assert counters(store)[("project", "proj", "requests")] == 2


async def test_a_worker_opening_its_first_connection_does_not_wait_for_the_lock(
        sqlite_store: SqliteQuotaStore, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    # The file and its schema exist (another worker made them); that worker now holds the
    # write lock. A fresh store opens its connection without it, then waits on the loop.
    await sqlite_store.admit(requests(100))
    monkeypatch.setattr(quota_sqlite, "LOCK_WAIT_SECONDS", 0.3)
    other = sqlite3.connect(sqlite_store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    fresh = SqliteQuotaStore(sqlite_store.path, QuotaSettings(reservation_ttl_seconds=60),
                             clock=clock)
    try:
        started = trio.current_time()
        with trio.fail_after(5), pytest.raises(QuotaUnavailable):
            await fresh.admit(requests(100))
        assert trio.current_time() - started < 2  # not the 30 s of a thread's busy wait
        assert len(fresh._all) == 1  # its connection opened all the same
        other.execute("COMMIT")
        with trio.fail_after(5):
            await fresh.settle(await fresh.admit(requests(100)), 1, 1)
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()
        fresh.close()
    assert counters(sqlite_store)[("project", "proj", "requests")] == 2


async def test_requests_queued_behind_a_new_files_locked_schema_each_wait_their_own_time(
        tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    # The file has no schema yet and another process holds its lock: every admission waiting
    # for the connection to open answers 503 after its own wait, not after those before it.
    monkeypatch.setattr(quota_sqlite, "LOCK_WAIT_SECONDS", 0.3)
    path = tmp_path / "fresh.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    store = SqliteQuotaStore(path, QuotaSettings(), clock=clock)
    answered: list[float] = []

    async def admit() -> None:
        started = trio.current_time()
        with pytest.raises(QuotaUnavailable):
            await store.admit(requests(100))
        answered.append(trio.current_time() - started)

    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(admit)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert len(answered) == 3 and max(answered) < 0.8, answered
    with trio.fail_after(10):  # the lock free: the schema is made and admission works
        await store.settle(await store.admit(requests(100)), 1, 1)
    store.close()


async def test_checkpoints_run_one_at_a_time(
        tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SqliteQuotaStore(tmp_path / "gw.db", QuotaSettings(threads=4), clock=clock)
    monkeypatch.setattr(quota_sqlite, "CHECKPOINT_EVERY", 1)
    running, most = 0, 0
    lock = threading.Lock()
    real = store._checkpoint

    def slow_checkpoint() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.1)
        real()
        with lock:
            running -= 1

    monkeypatch.setattr(store, "_checkpoint", slow_checkpoint)
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(lambda: _admit_and_settle(store))
    finally:
        store.close()
    assert most == 1


async def _admit_and_settle(store: SqliteQuotaStore) -> None:
    await store.settle(await store.admit(requests(100)), 1, 1)


def test_tool_calls_limits_count_tool_calls_only(store: SqliteQuotaStore) -> None:
    limits = (QuotaLimit("tool_calls", "daily", 2), QuotaLimit("requests", "daily", 1))
    call = QuotaRequest("proj", "alice", 0, project_limits=limits, tool_call=True)
    for _ in range(2):
        reservation = store.admit_sync(call)
        store.settle_sync(reservation.token, 0)
    with pytest.raises(QuotaRefused) as refused:
        store.admit_sync(call)
    assert refused.value.remaining == {"project": [
        {"unit": "tool_calls", "window": "daily", "limit": 2, "remaining": 0,
         "reset_at": "2024-02-29T00:00:00Z"}]}
    # Model requests are counted apart: the request limit is untouched by the tool calls ...
    store.admit_sync(QuotaRequest("proj", "alice", 0, project_limits=limits))
    assert counters(store) == {("project", "proj", "tool_calls"): 2,
                               ("project", "proj", "requests"): 1}
    # ... and a released tool call gives its slot back.
    held = store.admit_sync(QuotaRequest("proj", "bob", 0, user_limits=(
        QuotaLimit("tool_calls", "daily", 1),), tool_call=True))
    store.release_sync(held.token)
    assert counters(store)[("user", "bob", "tool_calls")] == 0
