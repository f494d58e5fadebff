"""The policies directory, compiled, with a revision history in SQLite (docs/management.md,
docs/policy-language.md, docs/events.md).

The directory of `*.pol` and `*.json` files is the one source of truth for policies. Loading it
compiles every file (at startup, on reload, from the CLI: never on a request) and yields an
immutable `PolicyRegistry` snapshot keyed by each policy's own `policy_id`. A file that fails its
check is reported in `errors` and not loaded; given the `previous` snapshot, the last good version
of that file stays in force.

Revisions: every distinct content a policy has had gets a row in `policy_revisions`. A load
compares each file's SHA-256 with the policy's latest row and adds a row only when it differs, in
one `BEGIN IMMEDIATE` transaction, so reloading is stable and processes loading the same files
agree on the numbers. The rows a load added come back in `PolicyRegistry.changes`, for the
gateway's `revision` events.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import astuple, dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

import sqlite_utils

import dsl
from gateway.db import now_iso
from gateway.errors import PolicyDirectoryError, PolicyFileError
from gateway.policy.escalation import EscalationSettings, escalation_diagnostic
from gateway.storage.sql import Sql, as_sql

EDIT_TYPES = ("create", "update", "delete")






@dataclass(frozen=True)
class LoadedPolicy:
    policy: dsl.CompiledPolicy
    policy_id: str
    name: str
    revision: int
    path: str
    source: str
    sha256: str

    @property
    def classification(self) -> str:
        return self.policy.classification


@dataclass(frozen=True)
class PolicyRevision:
    """One row of the revision history; `source` is the policy text of that revision (for a
    delete, the last text the policy had), which revision events carry as `config_snapshot`."""

    policy_id: str
    revision: int
    edit_type: str
    sha256: str
    source: str
    name: str
    classification: str
    path: str
    created_at: str


@dataclass(frozen=True)
class PolicyRegistry:
    directory: str
    policies: Mapping[str, LoadedPolicy] = field(default_factory=dict)
    #: file path -> diagnostics, for files that failed their check and were not loaded.
    errors: Mapping[str, list[dsl.Diagnostic]] = field(default_factory=dict)
    #: revisions this load recorded, in the order they were recorded.
    changes: tuple[PolicyRevision, ...] = ()

    def get(self, policy_id: str) -> LoadedPolicy | None:
        return self.policies.get(policy_id)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], db: sqlite_utils.Database | Sql,
             previous: PolicyRegistry | None = None, *,
             escalation: EscalationSettings | None = None) -> PolicyRegistry:
        """Compile every policy file of `directory` and record new revisions. A policy whose
        escalation path is not configured in `escalation` fails its check like a typo.

        With `previous` (the snapshot in force), a file that now fails its check keeps its last
        good policy loaded, as long as no other file took over that policy id.
        """
        compiled: dict[str, _Compiled] = {}
        errors: dict[str, list[dsl.Diagnostic]] = {}
        for path in policy_files(directory):
            try:
                item = _compile_file(path, escalation)
            except PolicyFileError as failure:
                errors[str(path)] = failure.diagnostics
                continue
            other = compiled.get(item.policy_id)
            if other is not None:
                errors[str(path)] = [_duplicate_diagnostic(item, other.path)]
                continue
            compiled[item.policy_id] = item

        retained: dict[str, LoadedPolicy] = {}
        if previous is not None:
            for loaded in previous.policies.values():
                if loaded.path in errors and loaded.policy_id not in compiled:
                    retained[loaded.policy_id] = loaded
        broken_files = {Path(p).name for p in errors}

        db = as_sql(db)
        with db.transaction():
            latest = _latest_revisions(db)
            changes: list[PolicyRevision] = []
            policies: dict[str, LoadedPolicy] = {}
            for policy_id, item in compiled.items():
                revision, change = _record(db, item, latest.get(policy_id))
                policies[policy_id] = item.loaded(revision)
                if change is not None:
                    changes.append(change)
            for policy_id, last in latest.items():
                gone = policy_id not in policies and policy_id not in retained
                # A policy whose file is still there but broken is not deleted: it is reported,
                # and comes back as an update once fixed.
                if gone and last.edit_type != "delete" and Path(last.path).name not in broken_files:
                    changes.append(_record_delete(db, last))
        policies.update(retained)
        return cls(directory=str(directory), policies=MappingProxyType(policies),
                   errors=MappingProxyType(errors), changes=tuple(changes))


def policy_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The policy files of `directory` (not recursive), sorted: `*.pol` and `*.json`, without the
    `*.cases.json` golden files and hidden files (such as our own temporary files)."""
    folder = Path(directory)
    if not folder.is_dir():
        raise PolicyDirectoryError(f"policies directory {str(folder)!r} does not exist "
                                   "or is not a directory")
    return sorted(
        path for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".")
        and (path.suffix == ".pol" or (path.suffix == ".json"
                                       and not path.name.endswith(".cases.json"))))


def add_policy_file(src_path: str | os.PathLike[str], directory: str | os.PathLike[str],
                    db: sqlite_utils.Database | Sql, *,
                    escalation: EscalationSettings | None = None) -> LoadedPolicy:
    """Check `src_path`, then place it in `directory` as `<policy_id>.pol` (or `.json`) with an
    atomic replace and record its revision. Raises PolicyFileError when the check fails or when
    another file of the directory already defines the same policy id. To find such a file it
    loads the directory first, which records any revisions the other files are due."""
    item = _compile_file(Path(src_path), escalation)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".json" if item.source.lstrip().startswith("{") else ".pol"
    target = folder / f"{item.policy_id}{suffix}"
    current = PolicyRegistry.load(folder, db, escalation=escalation).get(item.policy_id)
    if current is not None and Path(current.path).name != target.name:
        raise PolicyFileError([_duplicate_diagnostic(item, current.path,
                                                     hint=f"edit {current.path} instead")],
                              item.source)
    _atomic_write(target, item.source)
    placed = _Compiled(item.policy, item.source, str(target), item.sha256)
    sql = as_sql(db)
    with sql.transaction():
        revision, _ = _record(sql, placed,
                              _latest_revisions(sql, item.policy_id).get(item.policy_id))
    return placed.loaded(revision)


def list_revisions(db: sqlite_utils.Database | Sql, policy_id: str) -> list[PolicyRevision]:
    """Every recorded revision of `policy_id`, oldest first (empty if it never existed)."""
    rows = as_sql(db).execute(f"SELECT {_COLUMNS} FROM policy_revisions WHERE policy_id = ? "
                      "ORDER BY revision", [policy_id]).fetchall()
    return [PolicyRevision(*row) for row in rows]


# --- internals -------------------------------------------------------------------------------

_COLUMNS = "policy_id, revision, edit_type, sha256, source, name, classification, path, created_at"


@dataclass(frozen=True)
class _Compiled:
    policy: dsl.CompiledPolicy
    source: str
    path: str
    sha256: str

    @property
    def policy_id(self) -> str:
        return self.policy.policy_id

    def loaded(self, revision: int) -> LoadedPolicy:
        return LoadedPolicy(policy=self.policy, policy_id=self.policy_id, name=self.policy.name,
                            revision=revision, path=self.path, source=self.source,
                            sha256=self.sha256)


def _compile_file(path: Path, escalation: EscalationSettings | None) -> _Compiled:
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyFileError([dsl.Diagnostic(str(path), 1, 1, "error",
                                              f"cannot read policy file: {exc}",
                                              "policy files are UTF-8 text")]) from exc
    try:
        policy = dsl.compile_policy(source, filename=str(path))
    except dsl.PolicyError as failure:
        raise PolicyFileError(failure.diagnostics, source) from failure
    problem = escalation_diagnostic(policy, escalation, source, str(path))
    if problem is not None:
        raise PolicyFileError([problem], source)
    return _Compiled(policy, source, str(path), hashlib.sha256(source.encode()).hexdigest())


def _duplicate_diagnostic(item: _Compiled, other_path: str, hint: str | None = None
                          ) -> dsl.Diagnostic:
    line, column = _position_of(item.source, f'"{item.policy_id}"')
    return dsl.Diagnostic(item.path, line, column, "error",
                          f"policy id {item.policy_id!r} is already defined in {other_path}",
                          hint or "give each policy its own id, or remove one of the files")


def _position_of(source: str, needle: str) -> tuple[int, int]:
    offset = source.find(needle)
    if offset < 0:
        return 1, 1
    line = source.count("\n", 0, offset) + 1
    return line, offset - (source.rfind("\n", 0, offset) + 1) + 1


def _latest_revisions(db: Sql, policy_id: str | None = None
                      ) -> dict[str, PolicyRevision]:
    where, args = ("AND r.policy_id = ?", [policy_id]) if policy_id else ("", [])
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM policy_revisions r WHERE r.revision = "
        f"(SELECT MAX(revision) FROM policy_revisions WHERE policy_id = r.policy_id) {where}",
        args).fetchall()
    return {row[0]: PolicyRevision(*row) for row in rows}


def _record(db: Sql, item: _Compiled, last: PolicyRevision | None
            ) -> tuple[int, PolicyRevision | None]:
    """The revision `item` is at, adding a row if its content is new. Call inside a write
    transaction that also read `last`."""
    if last is None or last.edit_type == "delete":
        edit_type = "create"
    elif last.sha256 != item.sha256:
        edit_type = "update"
    else:
        return last.revision, None
    revision = PolicyRevision(
        policy_id=item.policy_id, revision=(last.revision + 1) if last else 1,
        edit_type=edit_type, sha256=item.sha256, source=item.source, name=item.policy.name,
        classification=item.policy.classification, path=item.path, created_at=now_iso())
    _write_row(db, revision)
    return revision.revision, revision


def _record_delete(db: Sql, last: PolicyRevision) -> PolicyRevision:
    revision = replace(last, revision=last.revision + 1, edit_type="delete", created_at=now_iso())
    _write_row(db, revision)
    return revision


def _write_row(db: Sql, revision: PolicyRevision) -> None:
    # PolicyRevision's fields are declared in the order of _COLUMNS.
    db.execute(f"INSERT INTO policy_revisions({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               list(astuple(revision)))


def _atomic_write(target: Path, text: str) -> None:
    """Write `text` to `target` so that a reader sees the old file or the new one, never a part.
    The temporary file is hidden and not a `.pol`, so a concurrent load skips it."""
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                         suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
