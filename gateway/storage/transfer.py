"""`python -m gateway export` and `import`: move a deployment's data between stores.

`export` reads a SQLite deployment (the file of `[database] path` and its policies directory)
and writes one JSON-lines file: a header line, one line per row (`{"table": ..., "row": {...}}`)
and a last line with the row count of every table, so that `import` can tell a complete file
from a truncated one. `import` writes that file into the configured store, PostgreSQL when
`[database] url` is set, the SQLite file otherwise, in one transaction, and checks that every
table received exactly the exported rows; it refuses a store that already holds data.

What moves: accounts, keys, projects, grants, policy revisions, the policy files, events (with
their `seq`, so history cursors and connector progress stay valid) and connector progress.
What does not: quota counters (they restart with their windows) and connector leases.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from gateway.admin.registry import policy_files
from gateway.errors import CommandError

FORMAT = "policy-gateway-export"
VERSION = 1
#: In dependency order: a row's foreign keys point at tables earlier in the list.
TABLES = ("accounts", "api_keys", "projects", "project_grants", "policy_revisions",
          "policy_events", "event_deliveries")
#: The policy files, as the pseudo-table the export file carries them in.
POLICY_FILES = "policy_files"
#: Tables that must be empty before an import (it never merges two deployments).
_MUST_BE_EMPTY = ("accounts", "api_keys", "projects", "policy_revisions", "policy_events")
#: Longest line an export may hold (a policy file or an event is far smaller): a longer one is
#: refused before it is read whole into memory.
MAX_LINE_BYTES = 64 * 1024 * 1024
#: The values a column of each declared type may take (besides NULL), by a word of its type.
_TYPES: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("INT", (int,)), ("CHAR", (str,)), ("TEXT", (str,)), ("REAL", (int, float)),
    ("DOUB", (int, float)), ("FLOA", (int, float)), ("NUMERIC", (int, float)))


def export_sqlite(database_path: str, policies_dir: str | None, out: IO[bytes]
                  ) -> dict[str, int]:
    """Write the export of the SQLite deployment to `out`; the row count of each table."""
    conn = sqlite3.connect(f"file:{Path(database_path).resolve()}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    counts: dict[str, int] = {}
    try:
        version = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version"
                               ).fetchone()[0]
        out.write(orjson.dumps({"format": FORMAT, "version": VERSION, "source": "sqlite",
                                "schema_version": version}) + b"\n")
        for table in TABLES:
            counts[table] = 0
            order = "seq" if table == "policy_events" else "rowid"
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY {order}"):
                out.write(orjson.dumps({"table": table, "row": dict(row)}) + b"\n")
                counts[table] += 1
    except sqlite3.Error as exc:
        raise CommandError(f"cannot read {database_path}: {exc}") from None
    finally:
        conn.close()
    counts[POLICY_FILES] = 0
    if policies_dir is not None and Path(policies_dir).is_dir():
        for path in policy_files(policies_dir):
            row = {"filename": path.name, "source": path.read_text(encoding="utf-8")}
            out.write(orjson.dumps({"table": POLICY_FILES, "row": row}) + b"\n")
            counts[POLICY_FILES] += 1
    out.write(orjson.dumps({"end": counts}) + b"\n")
    return counts


def read_export(lines: IO[bytes]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """The rows of an export file by table, checked against its header and its counts."""
    rows: dict[str, list[dict[str, Any]]] = {table: [] for table in (*TABLES, POLICY_FILES)}
    header: dict[str, Any] | None = None
    counts: dict[str, int] | None = None
    for number, line in enumerate(_lines(lines), start=1):
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise CommandError(f"line {number} of the export is not JSON: {exc}") from None
        if header is None:
            if not isinstance(item, dict) or item.get("format") != FORMAT:
                raise CommandError("not a gateway export file (its first line is no header)")
            if item.get("version") != VERSION:
                raise CommandError(f"export format version {item.get('version')!r} is not "
                                   f"one this gateway reads ({VERSION})")
            header = item
        elif counts is not None:
            raise CommandError(f"line {number}: data after the end of the export")
        elif isinstance(item, dict) and "end" in item:
            counts = _end_counts(item["end"], number)
        elif isinstance(item, dict) and item.get("table") in rows and isinstance(
                item.get("row"), dict):
            rows[item["table"]].append(_scalar_row(item["table"], item["row"], number))
        else:
            raise CommandError(f"line {number}: not a row of a known table")
    if header is None or counts is None:
        raise CommandError("the export file is incomplete (no header or no end line): "
                           "export again")
    got = {table: len(found) for table, found in rows.items()}
    if got != counts:
        raise CommandError(f"the export file is incomplete: it announces {counts}, "
                           f"holds {got}")
    _check_policy_files(rows[POLICY_FILES])
    return rows, counts


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    number = 0
    while line := stream.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(line) > MAX_LINE_BYTES:
            raise CommandError(f"line {number} of the export is longer than "
                               f"{MAX_LINE_BYTES} bytes")
        if line.strip():
            yield line


def _end_counts(end: Any, number: int) -> dict[str, int]:
    if not isinstance(end, dict) or not all(
            isinstance(count, int) and not isinstance(count, bool) for count in end.values()):
        raise CommandError(f"line {number}: the end line's counts are not numbers by table")
    return dict(end)


def _scalar_row(table: str, row: dict[str, Any], number: int) -> dict[str, Any]:
    """`row`, whose every value is one a column holds (text, a number, or null)."""
    if not all(value is None or (isinstance(value, str | int | float)
                                 and not isinstance(value, bool)) for value in row.values()):
        raise CommandError(f"line {number}: a value of the {table} row is not text, a number "
                           f"or null")
    return row


def _check_policy_files(files: list[dict[str, Any]]) -> None:
    """Every policy file is a safe name and text: checked before anything is written."""
    from gateway.storage.policies import safe_filename

    names: set[str] = set()
    for item in files:
        name, source = item.get("filename"), item.get("source")
        if set(item) != {"filename", "source"} or not isinstance(source, str) \
                or not isinstance(name, str) or not safe_filename(name):
            raise CommandError(f"refusing the policy file {str(name)[:80]!r}: a file is a safe "
                               f".pol or .json name and its text")
        if name in names:
            raise CommandError(f"the policy file {name!r} is in the export twice")
        names.add(name)


def _check_types(table: str, columns: list[str], found: list[dict[str, Any]],
                 declared: dict[str, str]) -> None:
    """Each value of the rows is of its column's declared type (or null): SQLite would store
    text in a number column as it is, and the gateway would fail reading it later."""
    for column in columns:
        kind = declared.get(column, "").upper()
        allowed = next((types for word, types in _TYPES if word in kind), None)
        if allowed is None:
            continue
        for row in found:
            value = row[column]
            if value is not None and (not isinstance(value, allowed)
                                      or isinstance(value, bool)):
                raise CommandError(f"the export's {table}.{column} holds a value of the wrong "
                                   f"type ({type(value).__name__}, not {kind.lower()})")


def import_postgres(conn: Any, rows: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Write the rows into PostgreSQL (a psycopg connection) in one transaction; the counts
    read back. Rows the database refuses (a duplicate id, a text with NUL) roll it all back."""
    import psycopg

    try:
        return _import_postgres(conn, rows)
    except psycopg.Error as exc:
        raise CommandError(f"the import was refused and nothing was imported: "
                           f"{str(exc).splitlines()[0][:300]}") from None


def _import_postgres(conn: Any, rows: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    from gateway.storage.policies import _upsert

    with conn.transaction():
        _refuse_data(lambda table: conn.execute(f"SELECT EXISTS (SELECT 1 FROM {table})"
                                                ).fetchone()[0])
        for table in TABLES:
            found = rows[table]
            if not found:
                continue
            declared = dict(conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = %s", (table,)).fetchall())
            columns = _checked_columns(table, found, set(declared))
            _check_types(table, columns, found, declared)
            # COPY keeps the given `seq` of events (an identity column), as the cursors need.
            with conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in found:
                    copy.write_row([row.get(column) for column in columns])
        if rows["policy_events"]:
            conn.execute("SELECT setval(pg_get_serial_sequence('policy_events', 'seq'), "
                         "(SELECT MAX(seq) FROM policy_events))")
        for item in rows[POLICY_FILES]:
            _upsert(conn, item["filename"], item["source"], "import")
        counts = {table: int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
                  for table in TABLES}
        counts[POLICY_FILES] = int(conn.execute(
            "SELECT COUNT(*) FROM policy_sources WHERE deleted = 0").fetchone()[0])
        expected = {table: len(found) for table, found in rows.items()}
        if counts != expected:  # rolls the whole import back
            raise CommandError(f"the import did not arrive whole: expected {expected}, "
                               f"found {counts}")
    return counts


def import_sqlite(db: Any, policies_dir: str, rows: dict[str, list[dict[str, Any]]]
                  ) -> dict[str, int]:
    """Write the rows into a SQLite file (a `sqlite_utils.Database`) in one transaction, and
    the policy files into its policies directory."""
    from gateway.admin.registry import _atomic_write

    _check_policy_files(rows[POLICY_FILES])  # before any write: never half an import
    try:
        counts = _import_sqlite_rows(db, rows)
    except sqlite3.Error as exc:
        raise CommandError(f"the import was refused and nothing was imported: {exc}"
                           ) from None
    folder = Path(policies_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for item in rows[POLICY_FILES]:
        _atomic_write(folder / item["filename"], item["source"])
    counts[POLICY_FILES] = len(rows[POLICY_FILES])
    return counts


def _import_sqlite_rows(db: Any, rows: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    from gateway.db import write_transaction

    with write_transaction(db):
        _refuse_data(lambda table: db.conn.execute(
            f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()[0])
        for table in TABLES:
            declared = {r[1]: r[2] for r in db.conn.execute(f"PRAGMA table_info({table})")}
            for row in rows[table]:
                columns = _checked_columns(table, [row], set(declared))
                _check_types(table, columns, [row], declared)
                db.conn.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                                f"({', '.join('?' for _ in columns)})", list(row.values()))
        counts = {table: int(db.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
                  for table in TABLES}
        expected = {table: len(rows[table]) for table in TABLES}
        if counts != expected:
            raise CommandError(f"the import did not arrive whole: expected {expected}, "
                               f"found {counts}")
    return counts


def _checked_columns(table: str, found: list[dict[str, Any]], known: set[str]) -> list[str]:
    """The columns of the rows: each one of the table's own (the names go into the SQL), and
    the same in every row."""
    columns = list(found[0])
    for row in found:
        if list(row) != columns:
            raise CommandError(f"the rows of {table} do not all have the same columns")
    unknown = sorted(set(columns) - known)
    if unknown:
        raise CommandError(f"the export has columns {table} does not: {unknown[:3]}")
    return columns


def _refuse_data(has_rows: Any) -> None:
    full = [table for table in _MUST_BE_EMPTY if has_rows(table)]
    if full:
        raise CommandError(f"the target store already holds data ({', '.join(full)}): "
                           "import only into a new, empty store")
