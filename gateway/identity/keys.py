"""Accounts and API keys (SPEC §2): creating them, and recognising a credential on a request.

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
    """Writes and administrative reads of accounts and keys (CLI and management API)."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def create_account(self, name: str, plan: str) -> Account:
        if plan not in PLANS:
            raise IdentityError(f"unknown plan {plan!r}; plans are {', '.join(PLANS)}")
        if not name.strip():
            raise IdentityError("account name must not be empty")
        account = Account(id=f"acct_{secrets.token_hex(8)}", name=name, plan=plan)
        self.db.table("accounts").insert(
            {"id": account.id, "name": name, "plan": plan, "created_at": now_iso()}
        )
        return account

    def get_account(self, account_id: str) -> Account:
        rows = list(self.db["accounts"].rows_where("id = ?", [account_id]))
        if not rows:
            raise IdentityError(f"unknown account {account_id!r}")
        row = rows[0]
        return Account(id=row["id"], name=row["name"], plan=row["plan"])

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
            row = self.db.execute("SELECT account_id FROM projects WHERE id = ?",
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
        self.db.table("api_keys").insert(row)
        return _key_from_row(row), plaintext

    def list_keys(self, account_id: str | None = None) -> list[ApiKey]:
        where, args = ("account_id = ?", [account_id]) if account_id else (None, None)
        return [_key_from_row(r) for r in self.db["api_keys"].rows_where(where, args,
                                                                         order_by="created_at")]

    def revoke_key(self, key_id: str) -> ApiKey:
        table = self.db.table("api_keys")
        rows = list(table.rows_where("id = ?", [key_id]))
        if not rows:
            raise IdentityError(f"unknown key {key_id!r}")
        table.update(key_id, {"revoked": 1, "revoked_at": now_iso()})
        return _key_from_row({**rows[0], "revoked": 1})


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the account, the key used (if any) and the authenticated user id."""

    account: Account
    key: ApiKey | None
    user_id: str
    #: The verified JWT user (`gateway.identity.jwt.JwtUser`) when the credential was a token.
    jwt: Any = None


class IdentityCache:
    """In-memory snapshot of keys and accounts for the request path (see the module docstring)."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self._db = db
        self._data_version: int | None = None
        self._identity_version: int | None = None
        self._keys: dict[str, ApiKey] = {}
        self._accounts: dict[str, Account] = {}
        self._projects: dict[str, Project] = {}
        self._grants: dict[str, frozenset[str]] = {}

    def refresh_if_changed(self) -> None:
        # Two cheap checks, no disk I/O: has anything been committed to the file since (events
        # and quotas commit all the time), and if so, did keys, accounts, projects or grants
        # change? Only then is the snapshot read again.
        version = data_version(self._db)
        if version == self._data_version:
            return
        self._data_version = version
        identity = identity_version(self._db)
        if identity != self._identity_version:
            self._load()
            self._identity_version = identity

    def invalidate(self) -> None:
        """Force a reload on the next request (after a write on this same connection)."""
        self._data_version = self._identity_version = None

    def _load(self) -> None:
        self._accounts = {
            r["id"]: Account(id=r["id"], name=r["name"], plan=r["plan"])
            for r in self._db["accounts"].rows
        }
        self._keys = {r["key_hash"]: _key_from_row(r) for r in self._db["api_keys"].rows}
        self._projects = load_projects(self._db)
        self._grants = load_grants(self._db)

    def account(self, account_id: str) -> Account | None:
        self.refresh_if_changed()
        return self._accounts.get(account_id)

    def project(self, project_id: str) -> Project | None:
        """The project (`gateway.identity.projects.Project`) from the snapshot, or None."""
        self.refresh_if_changed()
        return self._projects.get(project_id)

    def jwt_may_use(self, caller: Caller, project_id: str) -> bool:
        """Grants come from the token, the configuration, or the management API."""
        if caller.jwt is not None and caller.jwt.may_use(project_id):
            return True
        return project_id in self._grants.get(caller.user_id, frozenset())

    def authenticate_key(self, plaintext: str) -> Caller:
        self.refresh_if_changed()
        key = self._keys.get(hash_key(plaintext))
        if key is None:
            raise InvalidApiKey("Incorrect API key provided.")
        if key.revoked:
            raise ApiKeyRevoked("This API key has been revoked.")
        account = self._accounts.get(key.account_id)
        if account is None:  # deleted account: its keys are dead
            raise InvalidApiKey("Incorrect API key provided.")
        return Caller(account=account, key=key, user_id=f"key:{key.id}")


def credential_from_headers(headers: Mapping[str, str]) -> str | None:
    """The bearer token or `x-api-key` value, whichever the client sent (SPEC §3)."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    api_key = headers.get("x-api-key")
    if api_key and api_key.strip():
        return api_key.strip()
    return None
