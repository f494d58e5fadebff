"""History queries over stored policy events (docs/events.md): the filters a caller may set,
cursors that page by `seq` without gaps or repeats, and the query on SQLite (PostgreSQL runs the
same filters in `gateway.events.pg_store`)."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlite_utils

from gateway.errors import HistoryQueryError
from gateway.events.store import EVENT_TYPES, row_to_event

FILTER_COLUMNS = ("project_id", "policy_id", "policy_target", "policy_user", "decision",
                  "event_type", "request_id")
#: Filters on a field kept in `extra` rather than in a column of its own (indexed in db.py).
_FILTER_EXPRESSIONS = {"request_id": "json_extract(extra, '$.request_id')"}
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    filters: Mapping[str, str] = field(default_factory=dict)
    since: str | None = None
    until: str | None = None
    limit: int = DEFAULT_LIMIT
    #: Only events with a smaller seq (the page after the one that ended at `before`).
    before: int | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Sequence[str]]) -> HistoryQuery:
        """From query parameters (each name to its values); raises HistoryQueryError."""
        allowed = {*FILTER_COLUMNS, "since", "until", "limit", "cursor"}
        values: dict[str, str] = {}
        for name, given in params.items():
            if name not in allowed:
                raise HistoryQueryError(f"unknown parameter '{name}'; known: {sorted(allowed)}")
            if len(given) != 1:
                raise HistoryQueryError(f"parameter '{name}' must be given once")
            values[name] = given[0]
        filters = {k: values[k] for k in FILTER_COLUMNS if k in values}
        if "event_type" in filters and filters["event_type"] not in EVENT_TYPES:
            raise HistoryQueryError(f"'event_type' must be one of {list(EVENT_TYPES)}")
        since = _timestamp(values["since"], "since") if "since" in values else None
        until = _timestamp(values["until"], "until") if "until" in values else None
        limit = DEFAULT_LIMIT
        if "limit" in values:
            text = values["limit"]
            if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
                raise HistoryQueryError(f"'limit' must be an integer from 1 to {MAX_LIMIT}")
            limit = int(text)
        before = decode_cursor(values["cursor"]) if "cursor" in values else None
        return cls(filters=filters, since=since, until=until, limit=limit, before=before)


def _timestamp(text: str, name: str) -> str:
    """RFC 3339 to the stored form (UTC, milliseconds, `Z`), so strings compare as times."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise HistoryQueryError(f"'{name}' must be an RFC 3339 time, "
                                "e.g. 2025-01-31T12:00:00Z") from None
    if moment.tzinfo is None:
        raise HistoryQueryError(f"'{name}' must carry a time zone (Z or +hh:mm)")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix != "seq" or not number.isdigit():
            raise ValueError(text)
        return int(number)
    except (ValueError, UnicodeDecodeError):
        raise HistoryQueryError("'cursor' is not a cursor this API returned") from None


def history_where(query: HistoryQuery, mark: str, expressions: Mapping[str, str]
                  ) -> tuple[list[str], list[Any]]:
    """The WHERE terms and arguments of `query`; `mark` is the driver's placeholder and
    `expressions` the filters on fields kept in `extra` (each backend spells JSON its way)."""
    where: list[str] = []
    args: list[Any] = []
    for column, value in query.filters.items():
        where.append(f"{expressions.get(column, column)} = {mark}")
        args.append(value)
    if query.since is not None:
        where.append(f"created_at >= {mark}")
        args.append(query.since)
    if query.until is not None:
        where.append(f"created_at < {mark}")
        args.append(query.until)
    if query.before is not None:
        where.append(f"seq < {mark}")
        args.append(query.before)
    return where, args


def history_page(rows: Sequence[Mapping[str, Any]], limit: int
                 ) -> tuple[list[dict[str, Any]], str | None]:
    """Events of the first `limit` rows (read with LIMIT limit + 1) and the next cursor."""
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = encode_cursor(rows[-1]["seq"]) if more and rows else None
    return [row_to_event(row) for row in rows], cursor


def query_history(db: sqlite_utils.Database, query: HistoryQuery
                  ) -> tuple[list[dict[str, Any]], str | None]:
    """Events newest first (by commit order) and the cursor of the next page, if any.

    Paging goes by `seq`, which only grows: events committed while a client pages are newer
    than its first page and never shift the pages after it, so there are no duplicates or gaps.
    """
    where, args = history_where(query, "?", _FILTER_EXPRESSIONS)
    sql = "SELECT * FROM policy_events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq DESC LIMIT ?"
    args.append(query.limit + 1)
    return history_page(list(db.query(sql, args)), query.limit)
