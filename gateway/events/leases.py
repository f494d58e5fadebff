"""Leases in the database: which worker process runs a connector (docs/events.md).

Every hypercorn worker starts every connector, but only the worker holding the connector's
unexpired lease delivers, so a webhook or a JSON-lines file gets each event from one process.
The holder renews well before expiry and releases on clean shutdown; when it dies, its lease
runs out and another worker takes over from the stored delivery progress (at least once: an
event whose delivery was not yet recorded is sent again, none is lost).

With Redis configured (`[redis]`), `RedisConnectorLease` keeps the same claim in Redis instead,
per connector and event store, for replicas on several machines.

Time comes from an injected clock (wall-clock seconds, comparable across processes), so the
rules are tested without sleeping; `may_claim` holds them with no I/O at all.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import sqlite_utils
import trio

from gateway.db import DatabaseOnDemand, write_transaction

#: How long a lease lasts unless renewed; the holder renews every third of it.
DEFAULT_LEASE_SECONDS = 15.0


def lease_owner_id() -> str:
    """A name for this process's claims: host and pid say which worker, the suffix keeps a
    restarted process with a reused pid apart from its predecessor."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def may_claim(holder: str | None, expires_at: float | None, owner: str, now: float) -> bool:
    """Whether `owner` may take (or renew) a lease now held by `holder` until `expires_at`:
    yes when it is free, expired, or already `owner`'s."""
    return holder is None or holder == owner or expires_at is None or expires_at <= now


class ConnectorLease:
    """One process's claim on one connector's lease, in table `connector_leases`.

    Calls never overlap (the connector task runs them one at a time in a worker thread); the
    lease keeps its own connection so that it never waits behind a slow delivery read."""

    def __init__(self, database_path: str, connector: str, owner: str, *,
                 ttl: float = DEFAULT_LEASE_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self.database_path = database_path
        self.connector = connector
        self.owner = owner
        self.ttl = ttl
        self.clock = clock
        #: When the lease this process holds runs out (None: not held, as far as it knows).
        self.expires_at: float | None = None
        self._database = DatabaseOnDemand(database_path)

    @property
    def db(self) -> sqlite_utils.Database:
        return self._database.get()

    def claim(self) -> bool:
        """Take the lease if it is free or expired, or renew it if it is ours; True when this
        process holds it afterwards. One `BEGIN IMMEDIATE` transaction, so two processes
        checking at once cannot both win."""
        now = self.clock()
        with write_transaction(self.db):
            row = self.db.execute(
                "SELECT owner, expires_at FROM connector_leases WHERE connector = ?",
                [self.connector]).fetchone()
            holder, expires_at = (row[0], float(row[1])) if row else (None, None)
            if not may_claim(holder, expires_at, self.owner, now):
                self.expires_at = None
                return False
            self.db.execute(
                "INSERT INTO connector_leases(connector, owner, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT(connector) DO UPDATE SET owner = excluded.owner, "
                "expires_at = excluded.expires_at",
                [self.connector, self.owner, now + self.ttl])
        self.expires_at = now + self.ttl
        return True

    def held(self) -> bool:
        """Whether the lease this process last took or renewed is still unexpired."""
        return self.expires_at is not None and self.clock() < self.expires_at

    def holder(self) -> tuple[str, float] | None:
        """(owner, expires_at) of the stored lease, expired or not; None when there is none."""
        row = self.db.execute("SELECT owner, expires_at FROM connector_leases "
                              "WHERE connector = ?", [self.connector]).fetchone()
        return (str(row[0]), float(row[1])) if row else None

    def release(self) -> None:
        """Give the lease up (clean shutdown) so another worker takes over at once; a lease
        another process has taken meanwhile is left alone."""
        self.expires_at = None
        with write_transaction(self.db):
            self.db.execute("DELETE FROM connector_leases WHERE connector = ? AND owner = ?",
                            [self.connector, self.owner])

    def close(self) -> None:
        self._database.close()


# --- in Redis, when it is configured (docs/scale-out.md) -------------------------------------

#: Take the lease when it is free or ours, for ARGV[2] ms; 1 when held afterwards.
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
#: Give the lease up only if it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def event_store_id(db: sqlite_utils.Database) -> str:
    """The id of this event store (its database), made on first use: a connector's lease in
    Redis is per event store, so replicas with their own files each deliver their own events,
    and the workers or replicas sharing one file deliver each event once."""
    db.conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('event_store_id', ?)",
                    [uuid.uuid4().hex])
    return str(db.conn.execute(
        "SELECT value FROM meta WHERE key = 'event_store_id'").fetchone()[0])


class RedisConnectorLease(ConnectorLease):
    """`ConnectorLease` with the claim in Redis: one key per connector and event store that
    expires on its own (Redis keeps the time, so the replicas' clocks do not matter). Called
    from a worker thread like the SQLite lease; each call hops to the event loop, which owns
    the Redis client. Redis down: `SharedStateUnavailable`, and the connector keeps delivering
    only while its last claim lasts."""

    def __init__(self, database_path: str, connector: str, owner: str, link: Any, *,
                 ttl: float = DEFAULT_LEASE_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(database_path, connector, owner, ttl=ttl, clock=clock)
        self.link = link
        self._key: str | None = None

    def key(self) -> str:
        if self._key is None:
            with write_transaction(self.db):
                store = event_store_id(self.db)
            from gateway.quota.redis import key_part

            self._key = self.link.key("lease", store, key_part(self.connector))
        return self._key

    def claim(self) -> bool:
        now, key = self.clock(), self.key()
        held = trio.from_thread.run(self._script, _CLAIM, key, str(int(self.ttl * 1000)))
        self.expires_at = now + self.ttl if held else None
        return bool(held)

    def holder(self) -> tuple[str, float] | None:
        key = self.key()

        async def read() -> tuple[str, float] | None:
            owner = await self.link.call(lambda client: client.get(key))
            ttl = await self.link.call(lambda client: client.pttl(key))
            return (owner.decode(), self.clock() + ttl / 1000) if owner else None

        return trio.from_thread.run(read)

    def release(self) -> None:
        self.expires_at = None
        trio.from_thread.run(self._script, _RELEASE, self.key(), "")

    async def _script(self, source: str, key: str, argument: str) -> Any:
        from glide import Script

        args = [self.owner] + ([argument] if argument else [])
        return await self.link.call(
            lambda client: client.invoke_script(Script(source), keys=[key], args=args))
