"""A connector's delivery progress in the SQLite events database: the next stored events to
deliver, in `seq` order, and how far it got (table `event_deliveries`). With PostgreSQL the same
interface is `PgDeliveryLog` (gateway/events/pg_delivery.py). Every method runs on a worker
thread (the connector task's `trio.to_thread.run_sync`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlite_utils

from gateway.db import DatabaseOnDemand
from gateway.events.connector_settings import ConnectorSettings
from gateway.events.store import row_to_event


class DeliveryLog:
    """A connector's view of the database: the next events to deliver and its progress."""

    def __init__(self, database_path: str, settings: ConnectorSettings) -> None:
        self.database_path = database_path
        self.settings = settings
        self._database = DatabaseOnDemand(database_path)
        #: The newest seq a filtered `pending` looked past: with no match up to there, the
        #: progress moves on, so a rarely matching connector does not rescan the table.
        self.scanned = 0

    @property
    def db(self) -> sqlite_utils.Database:
        return self._database.get()

    def delivered_seq(self) -> int:
        row = self.db.execute("SELECT delivered_seq FROM event_deliveries WHERE connector = ?",
                              [self.settings.name]).fetchone()
        return int(row[0]) if row else 0

    def pending(self, after: int) -> list[tuple[int, dict[str, Any]]]:
        row = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM policy_events").fetchone()
        self.scanned = int(row[0])
        sql = "SELECT * FROM policy_events WHERE seq > ?"
        args: list[Any] = [after]
        if self.settings.project_id is not None:
            sql += " AND project_id = ?"
            args.append(self.settings.project_id)
        if self.settings.escalation_target is not None:
            sql += (" AND event_type = 'enforcement' AND EXISTS (SELECT 1 FROM json_each("
                    "json_extract(extra, '$.escalation_targets')) WHERE value = ?)")
            args.append(self.settings.escalation_target)
        sql += " ORDER BY seq LIMIT ?"
        args.append(self.settings.batch_size)
        return [(row["seq"], row_to_event(row)) for row in self.db.query(sql, args)]

    def record(self, seq: int, delivered: int, failures: int, error: str | None) -> None:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        with self.db.conn:
            self.db.execute(
                "INSERT INTO event_deliveries(connector, delivered_seq, delivered, failures, "
                "last_error, updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(connector) DO "
                "UPDATE SET delivered_seq = MAX(delivered_seq, excluded.delivered_seq), "
                "delivered = delivered + excluded.delivered, "
                "failures = failures + excluded.failures, last_error = excluded.last_error, "
                "updated_at = excluded.updated_at",
                [self.settings.name, seq, delivered, failures, error, now])

    def close(self) -> None:
        self._database.close()
