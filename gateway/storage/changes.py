"""How each replica learns that another one changed shared state in PostgreSQL.

Triggers bump a counter in `change_versions` on every change of the identity tables and of
the policy sources (`gateway.storage.pg_schema`). `ChangePoller` reads those counters every
`[database] poll_interval` (0.25 s) on a worker thread, off the request path, and runs the
refresh of whatever moved: the identity snapshot, the policies. A local write calls `wake()` to
poll at once. Why a poll rather than LISTEN/NOTIFY is in docs/scale-out.md: it needs no
dedicated connection, works through connection poolers such as PgBouncer, cannot miss a
notification across a reconnect, and its cost (one indexed one-row read per worker per
interval) was measured to be negligible.

While PostgreSQL does not answer, the snapshots in force stay in force; `status()` says
"unavailable: why" for `/readyz`, and the first successful poll refreshes everything that moved.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from gateway.errors import DatabaseUnavailable
from gateway.storage.postgres import Postgres

log = logging.getLogger("gateway.storage")

Refresh = Callable[[], Awaitable[None]]


def read_versions(conn: Any) -> dict[str, int]:
    return {name: int(version) for name, version in
            conn.execute("SELECT name, version FROM change_versions").fetchall()}


class ChangePoller:
    def __init__(self, pg: Postgres, interval: float) -> None:
        self.pg = pg
        self.interval = interval
        #: counter name -> what to run when it moved.
        self.refreshers: dict[str, Refresh] = {}
        self._seen: dict[str, int] = {}
        self._error: str | None = None
        self._wake = trio.Event()
        #: Monotonic time of the last poll that reached PostgreSQL.
        self.last_success = -math.inf

    def watch(self, name: str, refresh: Refresh) -> None:
        self.refreshers[name] = refresh

    def wake(self) -> None:
        self._wake.set()

    def status(self) -> str:
        return "ok" if self._error is None else f"unavailable: {self._error}"

    async def poll_once(self) -> None:
        """Read the counters and refresh what moved; DatabaseUnavailable when unreachable."""
        # A short wait for a connection: an outage shows in readiness within about a second,
        # not after the full connect timeout the management calls get.
        versions = await self.pg.run(read_versions, wait=min(1.0, self.pg.settings.connect_timeout))
        for name, refresh in self.refreshers.items():
            if versions.get(name) != self._seen.get(name):
                try:
                    await refresh()
                except DatabaseUnavailable:
                    raise
                except Exception:  # e.g. the mirror directory unwritable: retried next poll
                    log.exception("refreshing the shared %s failed; retrying", name)
                    continue
                # Recorded only after the refresh succeeded: a failed one is retried.
                self._seen[name] = versions.get(name, 0)
        self.last_success = trio.current_time()

    def mark_seen(self, name: str, version: int | None) -> None:
        """The snapshot of `name` in force was read at `version` (no refresh needed for it)."""
        if version is not None:
            self._seen[name] = version

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with trio.move_on_after(self.interval):
                await self._wake.wait()
            self._wake = trio.Event()
            try:
                await self.poll_once()
            except DatabaseUnavailable as exc:
                if self._error is None:
                    log.error("PostgreSQL does not answer; serving the identity and policies "
                              "in memory until it does: %s", exc)
                self._error = str(exc)
                continue
            except Exception as exc:  # e.g. the schema was dropped: keep serving from memory
                if self._error is None:
                    log.exception("reading changes from PostgreSQL failed; serving the "
                                  "identity and policies in memory until it works")
                self._error = f"{type(exc).__name__}: {exc}"
                continue
            if self._error is not None:
                log.info("PostgreSQL answers again; shared state refreshed")
                self._error = None
