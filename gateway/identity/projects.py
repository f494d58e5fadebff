"""Projects and JWT users' project grants (docs/management.md, docs/security.md): storing them, and
snapshots for serving.

A project belongs to one account, links at most one policy by id (policies live as files, see
`gateway.admin.registry`), and carries two quotas: `budget` for the whole project and
`user_quota` for each quota subject. A quota is a mapping unit -> window -> limit, e.g.
`{"requests": {"daily": 1000}, "tokens": {"monthly": 500000}}`; 0 means unlimited.

The request path never reads these tables: it keeps `load_projects` / `load_grants` snapshots in
memory and takes new ones when SQLite's `data_version` says another connection wrote.
"""

from __future__ import annotations

import builtins
import functools
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import sqlite_utils

from dsl import QuotaLimit
from gateway.db import now_iso
from gateway.errors import ProjectError
from gateway.labels import label_problem
from gateway.storage.sql import Sql, as_sql

PROJECT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{1,63}")
STATUSES = ("active", "disabled")
#: `tool_calls` limits apply to governed MCP tool calls only (docs/mcp.md).
QUOTA_UNITS = ("requests", "tokens", "tool_calls")
QUOTA_WINDOWS = ("minute", "hour", "daily", "weekly", "monthly")
UPDATABLE = frozenset({"name", "status", "policy_id", "budget", "user_quota",
                       "allow_inline_policy"})

Quota = dict[str, dict[str, int]]




@dataclass(frozen=True)
class Project:
    """One project. `budget` and `user_quota` are validated quota mappings; treat them as
    read-only (snapshots are shared by every request)."""

    id: str
    account_id: str
    name: str
    status: str
    policy_id: str | None
    budget: Quota = field(default_factory=dict)
    user_quota: Quota = field(default_factory=dict)
    allow_inline_policy: bool = False
    created_at: str = ""
    updated_at: str = ""

    @property
    def project_label(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    @functools.cached_property  # snapshots are shared: worked out once per project
    def budget_limits(self) -> tuple[QuotaLimit, ...]:
        """The project quota as limits to enforce (unlimited entries left out)."""
        return quota_limits(self.budget)

    @functools.cached_property  # snapshots are shared: worked out once per project
    def user_quota_limits(self) -> tuple[QuotaLimit, ...]:
        """The per-subject quota as limits to enforce (unlimited entries left out)."""
        return quota_limits(self.user_quota)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "account_id": self.account_id, "name": self.name,
            "status": self.status, "policy_id": self.policy_id,
            "budget": _copy_quota(self.budget), "user_quota": _copy_quota(self.user_quota),
            "allow_inline_policy": self.allow_inline_policy,
            "created_at": self.created_at, "updated_at": self.updated_at,
        }


def quota_limits(quota: Mapping[str, Mapping[str, int]]) -> tuple[QuotaLimit, ...]:
    return tuple(QuotaLimit(unit, window, limit)
                 for unit in QUOTA_UNITS for window, limit in quota.get(unit, {}).items()
                 if limit > 0)


def _copy_quota(quota: Mapping[str, Mapping[str, int]]) -> Quota:
    return {unit: dict(windows) for unit, windows in quota.items()}


def validate_quota(value: object, what: str = "quota") -> Quota:
    """A clean copy of `value` if it is a well-formed quota; ProjectError naming the bad part
    otherwise. None means no quota."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ProjectError(f"{what} must be an object like "
                           f'{{"requests": {{"daily": 1000}}}}, not {type(value).__name__}')
    quota: Quota = {}
    for unit, windows in value.items():
        if unit not in QUOTA_UNITS:
            raise ProjectError(f"{what}: unknown unit {unit!r}; units are "
                               f"{', '.join(QUOTA_UNITS)}")
        if not isinstance(windows, Mapping):
            raise ProjectError(f"{what}.{unit} must be an object of window -> limit, "
                               f"e.g. {{\"daily\": 1000}}")
        quota[unit] = {}
        for window, limit in windows.items():
            if window not in QUOTA_WINDOWS:
                raise ProjectError(f"{what}.{unit}: unknown window {window!r}; windows are "
                                   f"{', '.join(QUOTA_WINDOWS)}")
            # bool is an int subclass, and 1.0 is not a count: both are refused.
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise ProjectError(f"{what}.{unit}.{window} must be a non-negative integer "
                                   f"(0 = unlimited), not {limit!r}")
            quota[unit][window] = limit
    return quota


def _check_id(project_id: str) -> None:
    if not isinstance(project_id, str) or not PROJECT_ID.fullmatch(project_id):
        raise ProjectError(
            f"invalid project id {project_id!r}: use a slug of 2-64 characters, lower case "
            "letters, digits, `_` or `-`, starting with a letter or digit (e.g. proj_support_bot)")


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ProjectError("project name must be a non-empty string")
    problem = label_problem(name, "project name")
    if problem is not None:
        raise ProjectError(problem)
    return name


def _check_status(status: object) -> str:
    if status not in STATUSES:
        raise ProjectError(f"invalid status {status!r}; statuses are {', '.join(STATUSES)}")
    return str(status)


def _check_policy(policy_id: object, known_policies: Collection[str] | None) -> str | None:
    if policy_id is None:
        return None
    if not isinstance(policy_id, str) or not policy_id:
        raise ProjectError(f"invalid policy id {policy_id!r}")
    if known_policies is not None and policy_id not in known_policies:
        raise ProjectError(f"unknown policy {policy_id!r}: no loaded policy has this id "
                           "(add it with `python -m gateway policies add FILE`)")
    return policy_id


def _check_flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ProjectError(f"allow_inline_policy must be true or false, not {value!r}")
    return value


def _project_from_row(row: Mapping[str, Any]) -> Project:
    return Project(
        id=row["id"], account_id=row["account_id"], name=row["name"], status=row["status"],
        policy_id=row["policy_id"] or None,
        budget=json.loads(row["budget"]), user_quota=json.loads(row["user_quota"]),
        allow_inline_policy=bool(row["allow_inline_policy"]),
        created_at=row["created_at"] or "", updated_at=row["updated_at"] or "",
    )


class ProjectStore:
    """Writes and administrative reads of projects and grants (CLI and management API).

    `known_policies`, where accepted, is the set of policy ids currently loaded; give it to refuse
    linking a policy that does not exist (the store itself cannot see the policies directory).
    """

    def __init__(self, db: sqlite_utils.Database | Sql) -> None:
        self.db = db
        self.sql = as_sql(db)

    def create(
        self, project_id: str, *, account_id: str, name: str, status: str = "active",
        policy_id: str | None = None, budget: object = None, user_quota: object = None,
        allow_inline_policy: bool = False, known_policies: Collection[str] | None = None,
    ) -> Project:
        _check_id(project_id)
        now = now_iso()
        project = Project(
            id=project_id, account_id=account_id, name=_check_name(name),
            status=_check_status(status), policy_id=_check_policy(policy_id, known_policies),
            budget=validate_quota(budget, "budget"),
            user_quota=validate_quota(user_quota, "user_quota"),
            allow_inline_policy=_check_flag(allow_inline_policy),
            created_at=now, updated_at=now,
        )
        with self.sql.transaction():
            if self.sql.execute("SELECT 1 FROM accounts WHERE id = ?", [account_id]).fetchone() \
                    is None:
                raise ProjectError(f"unknown account {account_id!r}")
            if self.sql.execute("SELECT 1 FROM projects WHERE id = ?", [project_id]).fetchone():
                raise ProjectError(f"project {project_id!r} already exists")
            self.sql.insert("projects", _row(project))
        return project

    def get(self, project_id: str) -> Project:
        rows = self.sql.query("SELECT * FROM projects WHERE id = ?", [project_id])
        if not rows:
            raise ProjectError(f"unknown project {project_id!r}")
        return _project_from_row(rows[0])

    def list(self, account_id: str | None = None) -> builtins.list[Project]:
        where, args = ("WHERE account_id = ? ", [account_id]) if account_id else ("", [])
        return [_project_from_row(r)
                for r in self.sql.query(f"SELECT * FROM projects {where}ORDER BY id", args)]

    def update(self, project_id: str, *, known_policies: Collection[str] | None = None,
               **changes: Any) -> Project:
        """Change any of name, status, policy_id (None unlinks), budget, user_quota,
        allow_inline_policy; a quota given replaces the old one whole."""
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise ProjectError(f"cannot update {', '.join(sorted(unknown))}; updatable fields "
                               f"are {', '.join(sorted(UPDATABLE))}")
        checked: dict[str, Any] = {}
        if "name" in changes:
            checked["name"] = _check_name(changes["name"])
        if "status" in changes:
            checked["status"] = _check_status(changes["status"])
        if "policy_id" in changes:
            checked["policy_id"] = _check_policy(changes["policy_id"], known_policies)
        for quota in ("budget", "user_quota"):
            if quota in changes:
                checked[quota] = validate_quota(changes[quota], quota)
        if "allow_inline_policy" in changes:
            checked["allow_inline_policy"] = _check_flag(changes["allow_inline_policy"])
        with self.sql.transaction():
            current = self.get(project_id)
            project = replace(current, **checked, updated_at=now_iso())
            row = _row(project)
            columns = [*checked, "updated_at"]
            self.sql.execute(f"UPDATE projects SET {', '.join(f'{c} = ?' for c in columns)} "
                             "WHERE id = ?", [*(row[c] for c in columns), project_id])
        return project

    def grant(self, user_id: str, project_id: str) -> None:
        """Let the JWT user `user_id` (its `sub`) use `project_id`. Granting twice is harmless."""
        if not isinstance(user_id, str) or not user_id.strip():
            raise ProjectError("user id must be a non-empty string (the JWT `sub`)")
        with self.sql.transaction():
            self.get(project_id)
            self.sql.execute(
                "INSERT OR IGNORE INTO project_grants(user_id, project_id, created_at) "
                "VALUES (?, ?, ?)", [user_id, project_id, now_iso()])

    def revoke_grant(self, user_id: str, project_id: str) -> None:
        with self.sql.transaction():
            cursor = self.sql.execute(
                "DELETE FROM project_grants WHERE user_id = ? AND project_id = ?",
                [user_id, project_id])
            if cursor.rowcount == 0:
                raise ProjectError(f"user {user_id!r} has no grant on project {project_id!r}")

    def grants_for(self, user_id: str) -> frozenset[str]:
        rows = self.sql.execute(
            "SELECT project_id FROM project_grants WHERE user_id = ?", [user_id]).fetchall()
        return frozenset(r[0] for r in rows)


def _row(project: Project) -> dict[str, Any]:
    return {
        "id": project.id, "account_id": project.account_id, "name": project.name,
        "status": project.status, "policy_id": project.policy_id,
        "budget": json.dumps(project.budget, sort_keys=True),
        "user_quota": json.dumps(project.user_quota, sort_keys=True),
        "allow_inline_policy": int(project.allow_inline_policy),
        "created_at": project.created_at, "updated_at": project.updated_at,
    }


def load_projects(db: sqlite_utils.Database | Sql) -> dict[str, Project]:
    """Every project by id: the snapshot the request path resolves projects from."""
    return {r["id"]: _project_from_row(r) for r in as_sql(db).query("SELECT * FROM projects")}


def load_grants(db: sqlite_utils.Database | Sql) -> dict[str, frozenset[str]]:
    """user_id -> the projects granted to that JWT user."""
    grants: dict[str, set[str]] = {}
    for user_id, project_id in as_sql(db).execute(
            "SELECT user_id, project_id FROM project_grants"):
        grants.setdefault(user_id, set()).add(project_id)
    return {user: frozenset(projects) for user, projects in grants.items()}
