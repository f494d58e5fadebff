"""Connector progress and leases in PostgreSQL, shared by every replica.

`PgDeliveryLog` is `DeliveryLog` (gateway/events/delivery_log.py) on the shared tables: a
connector's `delivered_seq` is one row every replica reads and moves forward. `PgConnectorLease`
is `ConnectorLease` (gateway/events/leases.py) as one conditional upsert: among all the worker
processes of all replicas, the one holding a connector's unexpired lease delivers, so each event
goes to a destination once (at least once across a crash, as with SQLite). Lease times are the
claimants' wall clocks, like the SQLite lease across worker processes: replicas need clocks in
step to well within a lease (15 s by default), which NTP gives.

Rows become visible in `seq` order only (gateway/events/pg_store.py), so reading `seq > after`
never skips an event that a slower replica commits later.

Every method runs on a worker thread (the connector task's `trio.to_thread.run_sync`); a
server that cannot be reached, or refuses, raises `DatabaseUnavailable`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row

from gateway.errors import DatabaseUnavailable
from gateway.events.leases import DEFAULT_LEASE_SECONDS, ConnectorLease
from gateway.events.store import row_to_event
from gateway.storage.postgres import Postgres

if TYPE_CHECKING:
    from gateway.events.connector_settings import ConnectorSettings


@contextmanager
def _refused_as_unavailable() -> Iterator[None]:
    # Connection errors already arrive as DatabaseUnavailable; a statement PostgreSQL refuses
    # (schema dropped, read-only standby) is a deployment problem of the same kind here.
    try:
        yield
    except psycopg.Error as exc:
        raise DatabaseUnavailable(f"PostgreSQL refused: {type(exc).__name__}: {exc}") from exc


class PgDeliveryLog:
    """A connector's next events and its progress, in the shared tables."""

    def __init__(self, pg: Postgres, settings: ConnectorSettings) -> None:
        self.pg = pg
        self.settings = settings
        #: The newest seq a filtered `pending` looked past (see DeliveryLog.scanned).
        self.scanned = 0

    def delivered_seq(self) -> int:
        with _refused_as_unavailable():
            row = self.pg.run_sync(lambda conn: conn.execute(
                "SELECT delivered_seq FROM event_deliveries WHERE connector = %s",
                (self.settings.name,)).fetchone())
        return int(row[0]) if row else 0

    def pending(self, after: int) -> list[tuple[int, dict[str, Any]]]:
        sql = "SELECT * FROM policy_events WHERE seq > %s"
        args: list[Any] = [after]
        if self.settings.project_id is not None:
            sql += " AND project_id = %s"
            args.append(self.settings.project_id)
        if self.settings.escalation_target is not None:
            sql += (" AND event_type = 'enforcement' "
                    "AND ((extra::jsonb) -> 'escalation_targets') ? %s")
            args.append(self.settings.escalation_target)
        sql += " ORDER BY seq LIMIT %s"
        args.append(self.settings.batch_size)

        def read(conn: Any) -> tuple[int, list[dict[str, Any]]]:
            # One snapshot for both reads: `scanned` never passes a row the page did not see.
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                newest = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM policy_events"
                                      ).fetchone()[0]
                rows = conn.cursor(row_factory=dict_row).execute(sql, args).fetchall()
            return int(newest), rows

        with _refused_as_unavailable():
            self.scanned, rows = self.pg.run_sync(read)
        return [(row["seq"], row_to_event(row)) for row in rows]

    def record(self, seq: int, delivered: int, failures: int, error: str | None) -> None:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        with _refused_as_unavailable():
            self.pg.run_sync(lambda conn: conn.execute(
                "INSERT INTO event_deliveries(connector, delivered_seq, delivered, failures, "
                "last_error, updated_at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (connector) "
                "DO UPDATE SET delivered_seq = GREATEST(event_deliveries.delivered_seq, "
                "excluded.delivered_seq), "
                "delivered = COALESCE(event_deliveries.delivered, 0) + excluded.delivered, "
                "failures = COALESCE(event_deliveries.failures, 0) + excluded.failures, "
                "last_error = excluded.last_error, updated_at = excluded.updated_at",
                (self.settings.name, seq, delivered, failures, error, now)))

    def close(self) -> None:
        """The pool belongs to the process."""


class PgConnectorLease(ConnectorLease):
    """`ConnectorLease` in the shared `connector_leases` table: take it when free, expired or
    ours, in one statement, so two replicas claiming at once cannot both win."""

    def __init__(self, pg: Postgres, connector: str, owner: str, *,
                 ttl: float = DEFAULT_LEASE_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(":memory:", connector, owner, ttl=ttl, clock=clock)
        self.pg = pg

    def claim(self) -> bool:
        now = self.clock()
        with _refused_as_unavailable():
            row = self.pg.run_sync(lambda conn: conn.execute(
                "INSERT INTO connector_leases(connector, owner, expires_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (connector) DO UPDATE SET owner = excluded.owner, "
                "expires_at = excluded.expires_at WHERE connector_leases.owner = excluded.owner "
                "OR connector_leases.expires_at <= %s RETURNING owner",
                (self.connector, self.owner, now + self.ttl, now)).fetchone())
        self.expires_at = now + self.ttl if row is not None else None
        return row is not None

    def holder(self) -> tuple[str, float] | None:
        with _refused_as_unavailable():
            row = self.pg.run_sync(lambda conn: conn.execute(
                "SELECT owner, expires_at FROM connector_leases WHERE connector = %s",
                (self.connector,)).fetchone())
        return (str(row[0]), float(row[1])) if row else None

    def release(self) -> None:
        self.expires_at = None
        with _refused_as_unavailable():
            self.pg.run_sync(lambda conn: conn.execute(
                "DELETE FROM connector_leases WHERE connector = %s AND owner = %s",
                (self.connector, self.owner)))

    def close(self) -> None:
        """The pool belongs to the process."""
