"""`GET /readyz`: whether this gateway can serve, for load balancers and orchestrators.

503 only when it cannot: the database cannot be opened and read at its path, the policies are
not loaded, a policy that a project links to has a broken file and no good revision in force
(a bad deploy), or the gateway is shutting down. Everything else that is wrong stays ready with
a `degraded` note: PostgreSQL not answering (`postgres_unavailable`: identity and policies keep
being served from memory), events that cannot be written (`events_not_written`: the event
store, such as a shared PostgreSQL, is down, and events queue up to their bound), and (with the
`gateway_degraded` metric) a policy file that fails its check while
its last good revision stays in force, or that no project links to, and a linked policy that
has no file at all (that project gets `400 policy_not_linked` on every replica alike). Removing
every replica behind a load balancer for one bad file would turn a typo into an outage.

Without the admin credential the answer says only ready or not and the reason codes; paths,
diagnostics and database errors are for admins (`Authorization: Bearer <admin token>`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import trio
from quart import Blueprint, Response, current_app, request

from gateway.admin.auth import authorize_admin
from gateway.admin.reload import registry_problems
from gateway.errors import GatewayError

log = logging.getLogger("gateway.admin.readiness")
health = Blueprint("health", __name__)

#: Longest wait for the fresh database connection of one probe.
READY_PROBE_TIMEOUT = 2.0

# Reason codes: the only detail an unauthenticated caller gets.
DATABASE_UNAVAILABLE = "database_unavailable"
POLICIES_NOT_LOADED = "policies_not_loaded"
LINKED_POLICY_UNAVAILABLE = "linked_policy_unavailable"
SHUTTING_DOWN = "shutting_down"
POLICY_FILE_FAILING = "policy_file_failing"
LINKED_POLICY_MISSING = "linked_policy_missing"
EVENTS_NOT_WRITTEN = "events_not_written"


@dataclass
class Readiness:
    database: str = "ok"
    #: Files that fail their check (path, diagnostics, and what stays in force).
    policy_errors: list[dict[str, Any]] = field(default_factory=list)
    #: Policy ids linked to a project with no revision in force.
    unavailable_policies: list[str] = field(default_factory=list)
    shutting_down: bool = False
    #: Shared dependencies (Redis) that do not answer: name -> why.
    dependencies: dict[str, str] = field(default_factory=dict)
    #: The event writer: events held in memory, dropped so far, why writing fails (if it does).
    events: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.reasons

    def public(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ready" if self.ready else "not_ready"}
        if self.reasons:
            body["reasons"] = self.reasons
        if self.notes:
            body["degraded"] = self.notes
        return body

    def for_admin(self) -> dict[str, Any]:
        return {**self.public(), "database": self.database, "policy_errors": self.policy_errors,
                "unavailable_policies": self.unavailable_policies,
                "dependencies": self.dependencies, "events": self.events,
                "shutting_down": self.shutting_down}


@health.get("/readyz")
async def readyz() -> Response:
    state = current_app.extensions["gateway"]
    readiness = await assess(state)
    body = readiness.for_admin() if _is_admin(state) else readiness.public()
    return Response(orjson.dumps(body), status=200 if readiness.ready else 503,
                    headers={"content-type": "application/json"})


async def assess(state: Any) -> Readiness:
    """What `/readyz` answers (see the module docstring)."""
    readiness = Readiness(database=await _database_status(state))
    if readiness.database != "ok":
        readiness.reasons.append(DATABASE_UNAVAILABLE)
    registry = state.registry if state.serving else None
    if registry is None:
        readiness.reasons.append(POLICIES_NOT_LOADED)
    else:
        readiness.policy_errors = _policy_errors(registry)
        if readiness.policy_errors:
            readiness.notes.append(POLICY_FILE_FAILING)
        if readiness.database == "ok":
            try:
                linked = _linked_policy_ids(state)
            except sqlite3.Error as exc:
                linked = set()
                readiness.database = f"unavailable: {exc}"
                readiness.reasons.append(DATABASE_UNAVAILABLE)
            _check_linked(readiness, registry, linked)
    await _check_dependencies(readiness, state)
    _check_events(readiness, state)
    draining = current_app.extensions.get("draining")
    readiness.shutting_down = draining is not None and draining.draining
    if readiness.shutting_down:
        readiness.reasons.append(SHUTTING_DOWN)
    return readiness


async def _check_dependencies(readiness: Readiness, state: Any) -> None:
    """The shared state's probes (`state.readiness_checks`: Redis, when configured), each
    within READY_PROBE_TIMEOUT; a failing one is the reason `<name>_unavailable`."""
    for name, check in state.readiness_checks.items():
        answer = f"unavailable: no answer within {READY_PROBE_TIMEOUT:g} s"
        with trio.move_on_after(READY_PROBE_TIMEOUT):
            answer = await check()
        if answer != "ok":
            readiness.dependencies[name] = answer
            readiness.reasons.append(f"{name}_unavailable")
    # PostgreSQL: the replica keeps serving from its snapshots, so it stays ready, degraded.
    for name, status in state.degraded_checks.items():
        answer = status()
        if answer != "ok":
            readiness.dependencies[name] = answer
            readiness.notes.append(f"{name}_unavailable")


def _check_events(readiness: Readiness, state: Any) -> None:
    """Events that cannot be written (the event store down) leave the gateway ready, degraded:
    requests go on and their events wait in the bounded queue, dropped and counted beyond it.
    Taking every replica out of service over the audit trail would turn it into an outage."""
    writer, sink = state.event_writer, state.event_sink
    readiness.events = {"held": writer.held, "dropped": sink.dropped,
                        # refused by PostgreSQL even with NUL replaced (logged one by one)
                        "rejected": getattr(writer.store, "rejected", 0),
                        "write_error": writer.last_error}
    if writer.last_error is not None:
        readiness.notes.append(EVENTS_NOT_WRITTEN)


def _check_linked(readiness: Readiness, registry: Any, linked: set[str]) -> None:
    """A linked policy whose file is broken and that has no revision in force makes the
    gateway not ready (a broken deploy). A linked policy without any file (deleted, or never
    added) is a configuration mistake of one project: a `degraded` note, as its requests get
    `400 policy_not_linked` on every replica alike."""
    # Policy files are named after their policy id (`policies add` and the API write them so).
    broken_ids = {Path(path).stem for path in registry.errors}
    missing = sorted(p for p in linked if registry.get(p) is None)
    readiness.unavailable_policies = missing
    if any(policy_id in broken_ids for policy_id in missing):
        readiness.reasons.append(LINKED_POLICY_UNAVAILABLE)
    if any(policy_id not in broken_ids for policy_id in missing):
        readiness.notes.append(LINKED_POLICY_MISSING)


def _policy_errors(registry: Any) -> list[dict[str, Any]]:
    problems = registry_problems(registry)
    for problem in problems:
        kept = [p for p in registry.policies.values() if p.path == problem["path"]]
        problem["in_force"] = ({"policy_id": kept[0].policy_id, "revision": kept[0].revision}
                               if kept else None)
    return problems


def _linked_policy_ids(state: Any) -> set[str]:
    if state.postgres is not None:  # the snapshot in memory: readiness never waits on it
        return {p.policy_id for p in state.identities.snapshot.projects.values()
                if p.policy_id and p.status == "active"}
    rows = state.db.execute("SELECT DISTINCT policy_id FROM projects WHERE policy_id IS NOT NULL "
                            "AND status = 'active'").fetchall()
    return {row[0] for row in rows}


def _is_admin(state: Any) -> bool:
    if not request.headers.get("authorization") and not request.headers.get("x-api-key"):
        return False
    try:
        authorize_admin(state, request.headers)
    except GatewayError:
        return False
    except Exception:  # an API key looked up in a database that is gone: the public answer
        log.debug("readiness: the credential could not be checked", exc_info=True)
        return False
    return True


async def _database_status(state: Any) -> str:
    """"ok", or why the database is unusable. The file is probed with a fresh connection each
    time: the serving connection keeps answering from its open file descriptor after the file
    or its directory went away."""
    try:
        state.db.execute("SELECT 1").fetchone()
    except Exception as exc:  # closed or unusable: not ready, whatever the reason
        return f"unavailable: {exc}"
    with trio.move_on_after(READY_PROBE_TIMEOUT) as probe:
        return await trio.to_thread.run_sync(
            _probe_database, state.config.database_path,
            current_app.extensions.get("database_identity"), abandon_on_cancel=True)
    assert probe.cancelled_caught
    return f"unavailable: no answer within {READY_PROBE_TIMEOUT:g} s"


def database_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the database file, recorded when the app opens it."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _probe_database(path: str, identity: tuple[int, int] | None) -> str:
    """"ok", or why the database file the gateway opened cannot be opened and read for writing
    at `path` (a file created there since, e.g. after the directory was moved, is not it)."""
    if path == ":memory:":
        return "ok"
    if identity is not None and database_identity(path) != identity:
        return f"unavailable: {path} is missing or is not the file the gateway opened"
    try:
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=rw"
        conn = sqlite3.connect(uri, uri=True, timeout=1.0)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except (sqlite3.Error, OSError) as exc:
        return f"unavailable: {exc}"
    return "ok"
