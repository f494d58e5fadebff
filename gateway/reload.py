"""Hot reload of the policies directory (SPEC §10): the directory is the one source of truth.

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
from pathlib import Path
from typing import Any

import trio

from gateway.events import base_event
from gateway.policy_registry import PolicyDirectoryError, PolicyRegistry, policy_files

log = logging.getLogger("gateway.reload")

DEFAULT_INTERVAL = 0.25
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


def emit_revision_events(state: Any, registry: PolicyRegistry) -> None:
    """One `revision` event per revision `registry`'s load recorded, with the source snapshot."""
    for change in registry.changes:
        state.events.emit(base_event(
            "revision", user_id=None, org_id=None, policy_id=change.policy_id,
            policy_name=change.name, policy_revision=change.revision,
            data_classification=change.classification, edit_type=change.edit_type,
            config_snapshot=change.source))


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

    def reload(self) -> PolicyRegistry:
        """Load the directory now and put the result in force; returns the new snapshot."""
        registry = PolicyRegistry.load(self.directory, self.state.db,
                                       previous=self.state.registry)
        self.state.registry = registry
        self._log_errors(registry)
        emit_revision_events(self.state, registry)
        self._fingerprint = directory_fingerprint(self.directory)
        return registry

    def _log_errors(self, registry: PolicyRegistry) -> None:
        # Each broken content is logged once, not on every poll; a fixed file is logged as such.
        current: dict[str, str] = {}
        for path, diagnostics in registry.errors.items():
            text = "; ".join(f"{d.line}:{d.column}: {d.message}" for d in diagnostics)
            current[path] = text
            if self._reported.get(path) != text:
                kept = [p.policy_id for p in registry.policies.values() if p.path == path]
                log.error("policy file %s failed its check (%s): %s", path,
                          f"revision {kept[0]} stays in force" if kept else "not loaded", text)
        for path in self._reported.keys() - current.keys():
            log.info("policy file %s passes its check again", path)
        self._reported = current

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll the directory until cancelled; reload whenever its fingerprint changes."""
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            fingerprint = directory_fingerprint(self.directory)
            if fingerprint is None or fingerprint == self._fingerprint:
                continue
            try:
                self.reload()
            except PolicyDirectoryError as exc:  # removed while loading: keep what is in force
                log.error("policies directory unreadable, keeping the loaded policies: %s", exc)
            except Exception:  # a database hiccup must not stop the watcher for good
                log.exception("reloading the policies directory failed; retrying")
                self._fingerprint = None
