"""Accounts and API keys (docs/management.md): creating them, and recognising a credential on a
request.

Keys are shown in plaintext once, at creation, and stored only as a SHA-256 hash with a preview.
A keyed hash without salt is right here: keys carry 256 bits of randomness, so there is nothing
to brute-force, and the lookup must be an O(1) dictionary hit on the request path.

The request path never reads the disk in the steady state: `IdentityCache` keeps a snapshot of
accounts, keys, projects and grants in memory and reloads it only when SQLite's `data_version`
says another connection (another worker, the CLI) committed something and the identity version
(bumped by triggers on those tables, see `gateway.db`) says it changed them; a revocation thus
applies to the very next request everywhere, while event and quota writes cost no reload.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from gateway.db import data_version, identity_version, now_iso
from gateway.errors import ApiKeyRevoked, IdentityError, InvalidApiKey
from gateway.identity.projects import Project, load_grants, load_projects
from gateway.labels import label_problem
from gateway.storage.sql import Sql, as_sql

PLANS = ("free", "control", "advanced", "enterprise")
#: Plans that include the governed `/policy/*` surface.
POLICY_GATEWAY_PLANS = frozenset({"control", "advanced", "enterprise"})
KEY_PREFIX = "ak_"




@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    plan: str

    @property
    def has_policy_gateway(self) -> bool:
        return self.plan in POLICY_GATEWAY_PLANS


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    account_id: str
    project_id: str | None
    label: str
    key_preview: str
    revoked: bool
    created_at: str


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def preview(plaintext: str) -> str:
    return f"{plaintext[:6]}...{plaintext[-4:]}"


def _key_from_row(row: Mapping[str, object]) -> ApiKey:
    return ApiKey(
        id=str(row["id"]),
        account_id=str(row["account_id"]),
        project_id=str(row["project_id"]) if row.get("project_id") else None,
        label=str(row.get("label") or ""),
        key_preview=str(row["key_preview"]),
        revoked=bool(row["revoked"]),
        created_at=str(row.get("created_at") or ""),
    )


class IdentityStore:
    """Writes and administrative reads of accounts and keys (CLI and management API), on
    either backend (`gateway.storage.sql`)."""

    def __init__(self, db: sqlite_utils.Database | Sql) -> None:
        self.db = db
        self.sql = as_sql(db)

    def create_account(self, name: str, plan: str) -> Account:
        if plan not in PLANS:
            raise IdentityError(f"unknown plan {plan!r}; plans are {', '.join(PLANS)}")
        if not name.strip():
            raise IdentityError("account name must not be empty")
        account = Account(id=f"acct_{secrets.token_hex(8)}", name=name, plan=plan)
        self.sql.insert("accounts",
                        {"id": account.id, "name": name, "plan": plan, "created_at": now_iso()})
        return account

    def get_account(self, account_id: str) -> Account:
        row = self.sql.execute("SELECT id, name, plan FROM accounts WHERE id = ?",
                               [account_id]).fetchone()
        if row is None:
            raise IdentityError(f"unknown account {account_id!r}")
        return Account(id=row[0], name=row[1], plan=row[2])

    def create_key(
        self, account_id: str, *, project_id: str | None = None, label: str = ""
    ) -> tuple[ApiKey, str]:
        """Create a key and return it with its plaintext, which is never stored or shown again."""
        self.get_account(account_id)
        problem = label_problem(label, "a key label")
        if problem is not None:
            raise IdentityError(problem)
        if project_id is not None:
            # The API and the CLI alike: a key never binds to another account's project.
            row = self.sql.execute("SELECT account_id FROM projects WHERE id = ?",
                                   [project_id]).fetchone()
            if row is None or row[0] != account_id:
                raise IdentityError(f"project {project_id!r} does not exist in account "
                                    f"{account_id!r}")
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        row = {
            "id": f"key_{secrets.token_hex(8)}",
            "account_id": account_id,
            "project_id": project_id,
            "label": label,
            "key_hash": hash_key(plaintext),
            "key_preview": preview(plaintext),
            "revoked": 0,
            "created_at": now_iso(),
            "revoked_at": None,
        }
        self.sql.insert("api_keys", row)
        return _key_from_row(row), plaintext

    def list_keys(self, account_id: str | None = None) -> list[ApiKey]:
        where, args = ("WHERE account_id = ? ", [account_id]) if account_id else ("", [])
        # created_at has whole seconds: the key id breaks ties the same way on both backends.
        rows = self.sql.query(f"SELECT * FROM api_keys {where}ORDER BY created_at, id", args)
        return [_key_from_row(r) for r in rows]

    def revoke_key(self, key_id: str) -> ApiKey:
        rows = self.sql.query("SELECT * FROM api_keys WHERE id = ?", [key_id])
        if not rows:
            raise IdentityError(f"unknown key {key_id!r}")
        self.sql.execute("UPDATE api_keys SET revoked = 1, revoked_at = ? WHERE id = ?",
                         [now_iso(), key_id])
        return _key_from_row({**rows[0], "revoked": 1})


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the account, the key used (if any) and the authenticated user id."""

    account: Account
    key: ApiKey | None
    user_id: str
    #: The verified JWT user (`gateway.identity.jwt.JwtUser`) when the credential was a token.
    jwt: Any = None


@dataclass(frozen=True, slots=True)
class IdentitySnapshot:
    """Accounts, keys (by hash), projects and grants as of one read: swapped in whole."""

    accounts: Mapping[str, Account]
    keys: Mapping[str, ApiKey]
    projects: Mapping[str, Project]
    grants: Mapping[str, frozenset[str]]


EMPTY_SNAPSHOT = IdentitySnapshot({}, {}, {}, {})


def load_snapshot(db: sqlite_utils.Database | Sql) -> IdentitySnapshot:
    sql = as_sql(db)
    accounts = {r["id"]: Account(id=r["id"], name=r["name"], plan=r["plan"])
                for r in sql.query("SELECT id, name, plan FROM accounts")}
    keys = {r["key_hash"]: _key_from_row(r) for r in sql.query("SELECT * FROM api_keys")}
    return IdentitySnapshot(accounts, keys, load_projects(sql), load_grants(sql))


class IdentityCache:
    """In-memory snapshot of keys and accounts for the request path (see the module docstring).
    This one reads the SQLite file; `gateway.identity.shared.SharedIdentityCache` is the one for
    PostgreSQL, refreshed by a background task instead."""

    def __init__(self, db: sqlite_utils.Database | None) -> None:
        self._db = db
        self._data_version: int | None = None
        self._identity_version: int | None = None
        self._snapshot = EMPTY_SNAPSHOT

    @classmethod
    def of_snapshot(cls, snapshot: IdentitySnapshot) -> IdentityCache:
        """A cache that only ever answers from `snapshot` (a CLI command's one read)."""
        cache = cls(None)
        cache._snapshot = snapshot
        return cache

    def refresh_if_changed(self) -> None:
        # Two cheap checks, no disk I/O: has anything been committed to the file since (events
        # and quotas commit all the time), and if so, did keys, accounts, projects or grants
        # change? Only then is the snapshot read again.
        if self._db is None:
            return
        version = data_version(self._db)
        if version == self._data_version:
            return
        self._data_version = version
        identity = identity_version(self._db)
        if identity != self._identity_version:
            self._snapshot = load_snapshot(self._db)
            self._identity_version = identity

    def invalidate(self) -> None:
        """Force a reload on the next request (after a write on this same connection)."""
        self._data_version = self._identity_version = None

    @property
    def snapshot(self) -> IdentitySnapshot:
        self.refresh_if_changed()
        return self._snapshot

    def account(self, account_id: str) -> Account | None:
        return self.snapshot.accounts.get(account_id)

    def authenticated_project(self, project_id: str) -> Project | None:
        """The project as of the snapshot the request's authentication just refreshed: the
        request reads its key and its project from one snapshot, and checks the file once."""
        return self._snapshot.projects.get(project_id)

    def jwt_may_use(self, caller: Caller, project_id: str) -> bool:
        """Grants come from the token, the configuration, or the management API."""
        if caller.jwt is not None and caller.jwt.may_use(project_id):
            return True
        return project_id in self._snapshot.grants.get(caller.user_id, frozenset())

    def authenticate_key(self, plaintext: str) -> Caller:
        snapshot = self.snapshot
        key = snapshot.keys.get(hash_key(plaintext))
        if key is None:
            raise InvalidApiKey("Incorrect API key provided.")
        if key.revoked:
            raise ApiKeyRevoked("This API key has been revoked.")
        account = snapshot.accounts.get(key.account_id)
        if account is None:  # deleted account: its keys are dead
            raise InvalidApiKey("Incorrect API key provided.")
        return Caller(account=account, key=key, user_id=f"key:{key.id}")


def credential_from_headers(headers: Mapping[str, str]) -> str | None:
    """The bearer token or `x-api-key` value, whichever the client sent (docs/security.md)."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    api_key = headers.get("x-api-key")
    if api_key and api_key.strip():
        return api_key.strip()
    return None
