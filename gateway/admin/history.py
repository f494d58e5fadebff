"""`GET /api/policy-gateway/history` (docs/events.md): stored policy events, newest first; and the
same from the command line, `python -m gateway events tail|query`.

Needs an admin credential, checked by the one admin check of the management API
(gateway/admin/auth.py): an account's admin sees only its account's events. Filters:
`project_id`, `policy_id`, `policy_target`, `policy_user`, `decision`, `event_type`, `since`
(inclusive) and `until` (exclusive) as RFC 3339 times, `limit` (1..1000, default 100) and
`cursor` (the `next_cursor` of the previous page). Errors use the OpenAI error shape.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sqlite3
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import sqlite_utils
import trio

from gateway.adapters import CHAT
from gateway.admin.auth import authorize_admin
from gateway.cli.text import escape_controls
from gateway.errors import (
    DatabaseUnavailable,
    GatewayError,
    HistoryQueryError,
    HistoryUnavailable,
    InvalidRequest,
)
from gateway.events.history_query import (
    DEFAULT_LIMIT,
    FILTER_COLUMNS,
    MAX_LIMIT,
    HistoryQuery,
    query_history,
)
from gateway.events.store import row_to_event
from gateway.http.wire import Outbound, error_response

PATH = "/api/policy-gateway/history"
log = logging.getLogger("gateway.admin.history")


def _pg_history(conn: Any, query: HistoryQuery) -> tuple[list[dict[str, Any]], str | None]:
    import psycopg

    from gateway.events.pg_store import pg_query_history

    try:
        return pg_query_history(conn, query)
    except psycopg.Error as exc:  # refused (schema gone, standby): unavailable all the same
        raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc


class HistoryReader:
    """Answers history requests on a read connection of its own, on a worker thread, so a
    large page never stalls the event loop (reads run beside the writer in WAL mode)."""

    def __init__(self, database_path: str, state: Any) -> None:
        self.database_path = database_path
        self.state = state
        self._db: sqlite_utils.Database | None = None
        self._lock = trio.Lock()

    def _query(self, query: HistoryQuery) -> tuple[list[dict[str, Any]], str | None]:
        if self._db is None:
            conn = sqlite3.connect(self.database_path, timeout=5.0, isolation_level=None,
                                   check_same_thread=False)
            self._db = sqlite_utils.Database(conn)
        return query_history(self._db, query)

    async def respond(self, headers: Any, params: Mapping[str, Sequence[str]]) -> Outbound:
        try:
            admin = authorize_admin(self.state, headers)
            try:
                query = HistoryQuery.from_params(params)
            except HistoryQueryError as exc:
                raise InvalidRequest(str(exc)) from None
        except GatewayError as exc:
            return error_response(CHAT, exc)
        if not admin.is_global:  # an account's admin: that account's events only
            query = dataclasses.replace(query, filters={**query.filters,
                                                        "org_id": str(admin.account_id)})
        try:
            events, cursor = await self._read(query)
        except DatabaseUnavailable as exc:
            log.warning("history read failed: %s", exc)
            return error_response(CHAT, HistoryUnavailable(
                "the event history (PostgreSQL) did not answer; retry shortly",
                headers={"retry-after": "1"}))
        return Outbound.json(200, {"object": "list", "data": events, "next_cursor": cursor,
                                   "has_more": cursor is not None})

    async def _read(self, query: HistoryQuery) -> tuple[list[dict[str, Any]], str | None]:
        pg = getattr(self.state, "postgres", None)
        if pg is not None:  # every replica's events; the pool bounds concurrent reads
            return await pg.run(_pg_history, query)
        async with self._lock:  # one connection: queries take turns
            return await trio.to_thread.run_sync(self._query, query)

    def close(self) -> None:
        if self._db is not None:
            self._db.conn.close()
            self._db = None


# --- the command line: `python -m gateway events tail|query` --------------------------------

_LINE_FIELDS = ("event_type", "decision", "effective_decision", "status", "outcome",
                "project_id", "policy_id", "policy_user", "reason_code", "edit_type")


def add_event_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    events = commands.add_parser("events", help="read stored policy events").add_subparsers(
        metavar="ACTION")
    tail = events.add_parser("tail", parents=[common], help="the newest events, oldest first")
    tail.add_argument("-n", "--lines", type=int, default=20, metavar="N",
                      help="how many events to show first (default 20)")
    tail.add_argument("-f", "--follow", action="store_true",
                      help="keep printing events as they are written (Ctrl-C stops)")
    tail.add_argument("--json", action="store_true", help="one JSON event per line")
    tail.set_defaults(func=_events_tail)
    query = events.add_parser("query", parents=[common],
                              help="events matching filters, newest first")
    for column in FILTER_COLUMNS:
        query.add_argument("--" + column.replace("_", "-"), dest=column, metavar="VALUE")
    query.add_argument("--since", metavar="RFC3339", help="from this time (inclusive)")
    query.add_argument("--until", metavar="RFC3339", help="before this time (exclusive)")
    query.add_argument("--limit", default=str(DEFAULT_LIMIT), metavar="N",
                       help=f"at most N events (1..{MAX_LIMIT}, default {DEFAULT_LIMIT})")
    query.add_argument("--cursor", metavar="CURSOR", help="next_cursor of a previous query")
    query.add_argument("--json", action="store_true",
                       help="print {data, next_cursor} as JSON instead of one line per event")
    query.set_defaults(func=_events_query)


class _EventSource:
    """The CLI's read of the stored events: the SQLite file, or the shared PostgreSQL when
    `[database] url` is set (every replica's events)."""

    def __init__(self, config_path: str | None) -> None:
        from gateway.config import Config
        from gateway.db import open_database

        config = Config.load(config_path)
        self.pg: Any = None
        self.db: sqlite_utils.Database | None = None
        if config.postgres is not None:
            from gateway.storage.postgres import Postgres

            self.pg = Postgres(config.postgres)
        else:
            self.db = open_database(config.database_path)

    def rows(self, sql: str, args: Sequence[Any]) -> list[Mapping[str, Any]]:
        """`sql` with `?` marks, on whichever database holds the events."""
        if self.db is not None:
            return list(self.db.query(sql, args))
        from psycopg.rows import dict_row

        return self.pg.run_sync(lambda conn: conn.cursor(row_factory=dict_row).execute(
            sql.replace("?", "%s"), args).fetchall())

    def query(self, query: HistoryQuery) -> tuple[list[dict[str, Any]], str | None]:
        if self.db is not None:
            return query_history(self.db, query)
        return self.pg.run_sync(_pg_history, query)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.pg is not None:
            self.pg.close()


def _line(event: Mapping[str, Any]) -> str:
    fields = " ".join(f"{k}={escape_controls(str(event[k]))}" for k in _LINE_FIELDS
                      if event.get(k) is not None)
    return f"{event.get('created_at')} {event.get('event_id')} {fields}"


def _print_event(event: Mapping[str, Any], as_json: bool) -> None:
    # json.dumps escapes every non-ASCII character, controls and bidi overrides included.
    print(json.dumps(event, sort_keys=True) if as_json else _line(event), flush=True)


def _events_tail(args: argparse.Namespace) -> int:
    source = _EventSource(args.config)
    try:
        rows = source.rows("SELECT * FROM policy_events ORDER BY seq DESC LIMIT ?",
                           [max(args.lines, 0)])
        last = rows[0]["seq"] if rows else source.rows(
            "SELECT COALESCE(MAX(seq), 0) AS seq FROM policy_events", [])[0]["seq"]
        for row in reversed(rows):
            _print_event(row_to_event(row), args.json)
        while args.follow:
            try:
                time.sleep(0.5)
            except KeyboardInterrupt:
                break
            for row in source.rows("SELECT * FROM policy_events WHERE seq > ? ORDER BY seq",
                                   [last]):
                last = row["seq"]
                _print_event(row_to_event(row), args.json)
    finally:
        source.close()
    return 0


def _events_query(args: argparse.Namespace) -> int:
    params = {name: [getattr(args, name)] for name in
              (*FILTER_COLUMNS, "since", "until", "limit", "cursor")
              if getattr(args, name) is not None}
    try:
        query = HistoryQuery.from_params(params)
    except HistoryQueryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    source = _EventSource(args.config)
    try:
        events, cursor = source.query(query)
    finally:
        source.close()
    if args.json:
        print(json.dumps({"data": events, "next_cursor": cursor}, indent=2, sort_keys=True))
    else:
        for event in events:
            _print_event(event, False)
        if cursor is not None:
            print(f"# more: --cursor {cursor}", file=sys.stderr)
    return 0
