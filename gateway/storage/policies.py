"""Policy sources in PostgreSQL, and each replica's mirror of them (docs/scale-out.md).

With PostgreSQL the database holds the policy files (`policy_sources`: file name and text), so
a policy written through any replica's API or CLI is in force on every replica. Each replica
mirrors the rows into a directory of its own (`policies-shared` in its data directory) and
loads that directory exactly as it loads a local one: compiling, keeping the last good revision
of a broken file and recording revisions (in PostgreSQL) stay the same code.

- `pull`: the database into the mirror (a replica, when the policies counter moved).
- `publish`: files of the mirror a write just changed into the database (API, CLI).
- `import_directory`: a configured policies directory into the database (GitOps). A file is
  written when its content differs from what the directory last held for it, so the directory
  overrides the database only when the directory itself changes; files removed from the
  directory are deleted only if they came from it.

All take a psycopg connection and run on a worker thread.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gateway.admin.registry import _atomic_write, policy_files
from gateway.db import now_iso
from gateway.storage.sql import LOCK_WAIT_MS

#: Key of the advisory lock writers of `policy_sources` take, so imports do not interleave.
_SOURCES_LOCK = 7_315_402_120


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def safe_filename(name: str) -> bool:
    """A policy file name the mirror may hold: no directory part, not hidden, .pol or .json."""
    return (Path(name).name == name and not name.startswith(".")
            and (name.endswith(".pol") or name.endswith(".json"))
            and not name.endswith(".cases.json") and "\x00" not in name)


def pull(conn: Any, directory: str | os.PathLike[str]) -> bool:
    """Make `directory` hold exactly the database's policy files; True if anything changed."""
    rows = conn.execute("SELECT filename, source, sha256 FROM policy_sources "
                        "WHERE deleted = 0").fetchall()
    wanted = {name: (source, sha) for name, source, sha in rows if safe_filename(name)}
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    changed = False
    for path in policy_files(folder):
        if path.name not in wanted:
            path.unlink(missing_ok=True)
            changed = True
    for name, (source, sha) in wanted.items():
        path = folder / name
        try:
            current = hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            current = None
        if current != sha:
            _atomic_write(path, source)
            changed = True
    return changed


def _upsert(conn: Any, name: str, source: str, origin: str,
            directory_sha: str | None = None, keep_directory_sha: bool = True) -> None:
    conn.execute(
        "INSERT INTO policy_sources(filename, source, sha256, deleted, origin, updated_at, "
        "directory_sha256) VALUES (%s, %s, %s, 0, %s, %s, %s) ON CONFLICT (filename) DO UPDATE "
        "SET source = EXCLUDED.source, sha256 = EXCLUDED.sha256, deleted = 0, "
        "origin = EXCLUDED.origin, updated_at = EXCLUDED.updated_at, directory_sha256 = "
        + ("policy_sources.directory_sha256" if keep_directory_sha
           else "EXCLUDED.directory_sha256"),
        (name, source, sha256_text(source), origin, now_iso(), directory_sha))


def _delete(conn: Any, name: str) -> None:
    conn.execute("UPDATE policy_sources SET deleted = 1, updated_at = %s, directory_sha256 = "
                 "NULL WHERE filename = %s AND deleted = 0", (now_iso(), name))


def publish(conn: Any, directory: str | os.PathLike[str], names: Iterable[str],
            origin: str = "api") -> None:
    """Write the mirror files `names` (just written or removed by an API or CLI write) to the
    database: a file present is upserted, a missing one deleted."""
    folder = Path(directory)
    with conn.transaction():
        conn.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT_MS}ms'")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SOURCES_LOCK,))
        for name in dict.fromkeys(names):
            path = folder / name
            if path.is_file():
                _upsert(conn, name, path.read_text(encoding="utf-8"), origin)
            else:
                _delete(conn, name)


def import_directory(conn: Any, directory: str | os.PathLike[str]) -> list[str]:
    """Import the configured policies directory (see the module docstring); the file names
    written or deleted."""
    files = {path.name: path.read_text(encoding="utf-8") for path in policy_files(directory)}
    changed: list[str] = []
    with conn.transaction():
        conn.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT_MS}ms'")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SOURCES_LOCK,))
        known = dict(conn.execute(
            "SELECT filename, directory_sha256 FROM policy_sources").fetchall())
        for name, source in files.items():
            sha = sha256_text(source)
            if known.get(name) != sha:
                _upsert(conn, name, source, "directory", sha, keep_directory_sha=False)
                changed.append(name)
        for name, directory_sha in known.items():
            if directory_sha is not None and name not in files:
                _delete(conn, name)
                changed.append(name)
    return changed
