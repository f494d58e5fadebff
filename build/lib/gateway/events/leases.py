"""Leases in the database: which worker process runs a connector (SPEC §9.3).

Every hypercorn worker starts every connector, but only the worker holding the connector's
unexpired lease delivers, so a webhook or a JSON-lines file gets each event from one process.
The holder renews well before expiry and releases on clean shutdown; when it dies, its lease
runs out and another worker takes over from the stored delivery progress (at least once: an
event whose delivery was not yet recorded is sent again, none is lost).

Time comes from an injected clock (wall-clock seconds, comparable across processes), so the
rules are tested without sleeping; `may_claim` holds them with no I/O at all.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable

import sqlite_utils

from gateway.db import open_database, write_transaction

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
        self._db: sqlite_utils.Database | None = None

    @property
    def db(self) -> sqlite_utils.Database:
        if self._db is None:
            self._db = open_database(self.database_path, check_same_thread=False,
                                     busy_timeout=5.0)
        return self._db

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
        if self._db is not None:
            self._db.conn.close()
            self._db = None
