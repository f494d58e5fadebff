"""Hot reload of the policies directory (docs/management.md): the directory is the one source of
truth.

`PolicyReloader.reload()` compiles the directory again with the snapshot in force as `previous`
(so a file that fails its check keeps its last good revision), swaps `state.registry` in one
assignment, and emits a `revision` event for every revision the load recorded. It never awaits,
so on trio it is atomic with respect to requests: a request holds the `LoadedPolicy` it resolved
and finishes under it, the next one sees the new snapshot.

`PolicyReloader.run()` is the watcher task: it polls a fingerprint of the directory (name, mtime,
size and content hash of every policy file) every `interval` seconds and reloads when it
changes. Polling needs no new dependency and behaves the same on every filesystem, including
bind mounts and network shares where inotify events do not arrive.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

import dsl
from gateway.admin.registry import (
    LoadedPolicy,
    PolicyRegistry,
    PolicyRevision,
    _atomic_write,
    policy_files,
)
from gateway.errors import (
    DatabaseUnavailable,
    PolicyConflict,
    PolicyDirectoryError,
    PolicyFileError,
    PolicyIdRefused,
)
from gateway.policy.escalation import EscalationSettings, escalation_diagnostic
from gateway.policy.records import revision_event as policy_revision_event

log = logging.getLogger("gateway.admin.reload")

DEFAULT_INTERVAL = 0.25
#: Policy ids become file names: keep them to characters that are safe in every filesystem.
SAFE_POLICY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
Fingerprint = tuple[tuple[str, int, int, str], ...]


def directory_fingerprint(directory: str | os.PathLike[str]) -> Fingerprint | None:
    """What the watcher compares between polls; None when the directory cannot be listed."""
    try:
        files = policy_files(directory)
    except PolicyDirectoryError:
        return None
    entries = []
    for path in files:
        try:
            stat = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:  # removed between listing and reading: the next poll sees it gone
            continue
        entries.append((path.name, stat.st_mtime_ns, stat.st_size, digest))
    return tuple(entries)


def revision_event(change: PolicyRevision, user_id: str | None = None) -> dict[str, Any]:
    """The `revision` event (docs/events.md) of one recorded revision, with the source snapshot."""
    return policy_revision_event(
        policy_id=change.policy_id, revision=change.revision, name=change.name,
        classification=change.classification, edit_type=change.edit_type,
        source=change.source, user_id=user_id)


def emit_revision_events(state: Any, registry: PolicyRegistry,
                         user_id: str | None = None) -> None:
    """One `revision` event per revision `registry`'s load recorded. Whoever records a revision
    emits its event (the gateway here, the CLI for its own writes), so each is emitted once.
    `user_id` is who made the change (the admin of an API write); None for a file edit."""
    for change in registry.changes:
        state.events.emit(revision_event(change, user_id))






def write_policy_file(directory: str | os.PathLike[str], source: str, registry: PolicyRegistry,
                      *, replacing: LoadedPolicy | None = None, filename: str = "<policy>",
                      escalation: EscalationSettings | None = None) -> Path:
    """Check `source` and, only if it passes, write it atomically as `<policy_id>.pol` (or
    `.json` for a JSON document) in `directory`; returns the path written. `registry` is the
    snapshot in force; `replacing` the policy an update replaces (None for a create).

    Raises PolicyFileError (with the diagnostics) when the check fails, PolicyIdRefused and
    PolicyConflict as their docstrings say; nothing is written then. The caller reloads the
    directory and confirms with `placed_policy`.
    """
    try:
        policy = dsl.compile_policy(source, filename=filename)
    except dsl.PolicyError as failure:
        raise PolicyFileError(failure.diagnostics, source) from None
    problem = escalation_diagnostic(policy, escalation, source, filename)
    if problem is not None:
        raise PolicyFileError([problem], source)
    if not SAFE_POLICY_ID.fullmatch(policy.policy_id):
        raise PolicyIdRefused(f"policy id {policy.policy_id!r} cannot be a file name: use "
                              "letters, digits, '_', '-' or '.', starting with a letter or digit")
    folder = Path(directory)
    suffix = ".json" if source.lstrip().startswith("{") else ".pol"
    target = folder / f"{policy.policy_id}{suffix}"
    if replacing is not None:
        if policy.policy_id != replacing.policy_id:
            raise PolicyIdRefused(f"the source defines policy {policy.policy_id!r}, not "
                                  f"{replacing.policy_id!r}; a policy id cannot change")
    elif registry.get(policy.policy_id) is not None:
        raise PolicyConflict(f"policy {policy.policy_id!r} already exists; update it instead")
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(target, source)
    if replacing is not None and Path(replacing.path) != target:
        Path(replacing.path).unlink(missing_ok=True)  # the format changed: .pol <-> .json
    return target


def placed_policy(registry: PolicyRegistry, policy_id: str, target: Path) -> LoadedPolicy:
    """The policy `write_policy_file` wrote, as the reloaded `registry` holds it; PolicyConflict
    when another file of the directory claims the same id (it was broken, so not loaded, when
    the write was checked)."""
    loaded = registry.get(policy_id)
    if loaded is None or loaded.path != str(target):
        problems = registry.errors.get(str(target), [])
        raise PolicyConflict(f"policy {policy_id!r} could not take effect: "
                             + ("; ".join(d.message for d in problems) or "another file "
                                "defines it"))
    return loaded


def registry_problems(registry: PolicyRegistry | None) -> list[dict[str, Any]]:
    """The files that failed their check, with their diagnostics, for `/readyz` and the API."""
    if registry is None:
        return [{"path": None, "diagnostics": [], "message": "policies are not loaded yet"}]
    return [{"path": path, "diagnostics": [d.as_dict() for d in diagnostics]}
            for path, diagnostics in sorted(registry.errors.items())]


class PolicyReloader:
    """Reloads `state.registry` from `state.config.policies_dir` (see the module docstring)."""

    def __init__(self, state: Any, *, interval: float = DEFAULT_INTERVAL) -> None:
        self.state = state
        self.interval = interval
        self.directory = Path(state.config.policies_dir)
        self._fingerprint: Fingerprint | None = directory_fingerprint(self.directory)
        self._reported: dict[str, str] = {}
        #: Called after each reload with the new snapshot, or None when loading failed
        #: (the metrics count reloads and failures this way).
        self.listeners: list[Callable[[PolicyRegistry | None], None]] = []
        #: Held by whoever changes the directory and reloads (the watcher, an API write), so
        #: the watcher never records another writer's change half-way or without its author.
        self.lock = trio.Lock()

    def _load(self) -> PolicyRegistry:
        return PolicyRegistry.load(self.directory, self.state.shared_sql,
                                   previous=self.state.registry,
                                   escalation=self.state.escalation)

    def reload(self, *, user_id: str | None = None) -> PolicyRegistry:
        """Load the directory now and put the result in force; returns the new snapshot.
        `user_id` is who changed the directory (the admin of an API write), for the events.
        With SQLite only: with PostgreSQL, `reload_async` (revisions are a round trip away)."""
        fingerprint = directory_fingerprint(self.directory)
        try:
            registry = self._load()
        except Exception:
            for listener in self.listeners:
                listener(None)
            raise
        return self._install(registry, user_id, fingerprint)

    async def reload_async(self, *, user_id: str | None = None) -> PolicyRegistry:
        """`reload`, with the load on a worker thread when revisions live in PostgreSQL; the
        swap itself stays on the event loop. Call it holding `lock`."""
        if self.state.postgres is None:
            return self.reload(user_id=user_id)
        try:
            fingerprint, registry = await trio.to_thread.run_sync(self._fingerprint_and_load)
        except Exception:
            for listener in self.listeners:
                listener(None)
            raise
        return self._install(registry, user_id, fingerprint)

    def _fingerprint_and_load(self) -> tuple[Fingerprint | None, PolicyRegistry]:
        fingerprint = directory_fingerprint(self.directory)
        return fingerprint, self._load()

    def _install(self, registry: PolicyRegistry, user_id: str | None,
                 fingerprint: Fingerprint | None) -> PolicyRegistry:
        """Put `registry` in force. `fingerprint` is the directory's as it was before the load:
        a file changed while (or just after) it loaded then differs from it, and the next poll
        loads again. (Taken after the load, it once recorded a file deleted right after the
        load as already seen, and the deletion was never put in force.)"""
        for listener in self.listeners:
            listener(registry)
        self.state.registry = registry
        self._log_errors(registry)
        emit_revision_events(self.state, registry, user_id)
        self._fingerprint = fingerprint
        return registry

    def _log_errors(self, registry: PolicyRegistry) -> None:
        # Each broken content is logged once, not on every poll; a fixed file is logged as such.
        current: dict[str, str] = {}
        for path, diagnostics in registry.errors.items():
            text = "; ".join(f"{d.line}:{d.column}: {d.message}" for d in diagnostics)
            current[path] = text
            if self._reported.get(path) != text:
                kept = [p for p in registry.policies.values() if p.path == path]
                log.error("policy file %s failed its check (%s): %s", path,
                          f"revision {kept[0].revision} of {kept[0].policy_id!r} stays in force"
                          if kept else "not loaded", text)
        for path in sorted(self._reported.keys() - current.keys()):
            fixed = [p for p in registry.policies.values() if p.path == path]
            if fixed:
                log.info("policy file %s passes its check again: revision %d of %r in force",
                         path, fixed[0].revision, fixed[0].policy_id)
            elif not os.path.exists(path):
                log.info("policy file %s, which failed its check, was removed", path)
            else:  # e.g. renamed to a name the directory does not load
                log.info("policy file %s is no longer loaded", path)
        self._reported = current

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll the directory until cancelled; reload whenever its fingerprint changes."""
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            async with self.lock:
                await self._reload_if_changed()

    async def _reload_if_changed(self) -> None:
        # Reading and hashing the files is disk I/O: off the event loop, so requests never
        # wait for it. (The swap itself stays on the loop: it replaces the registry atomically.)
        fingerprint = await trio.to_thread.run_sync(directory_fingerprint, self.directory)
        if fingerprint is None or fingerprint == self._fingerprint:
            return
        try:
            await self.reload_async()
        except PolicyDirectoryError as exc:  # removed while loading: keep what is in force
            log.error("policies directory unreadable, keeping the loaded policies: %s", exc)
        except DatabaseUnavailable as exc:  # PostgreSQL down: what is in force stays
            log.error("reloading the policies directory waits for the database: %s", exc)
            self._fingerprint = None
        except Exception:  # a database hiccup must not stop the watcher for good
            log.exception("reloading the policies directory failed; retrying")
            self._fingerprint = None
