"""Both quota stores behind one test surface: the SQLite store's blocking calls (`admit_sync`,
`settle_sync`, ...) and `counters(store)`, so one test module runs against either."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
from redis_server import RedisServer

from gateway.quota.limits import QuotaRequest, Reservation
from gateway.quota.redis import RedisHeld, RedisQuotaStore, key_part
from gateway.quota.sqlite import SqliteQuotaStore, subject_key
from gateway.redis_link import RedisLink, RedisSettings

T = TypeVar("T")


def redis_link(server: RedisServer, **settings: Any) -> RedisLink:
    # A request budget a loaded machine stays within: a call timing out would turn an expected
    # answer into "Redis unavailable". A Redis that is down is refused at once anyway.
    settings = {"request_timeout_ms": 5000, **settings}
    return RedisLink(RedisSettings(host="127.0.0.1", port=server.port, **settings))


class SyncRedisStore(RedisQuotaStore):
    """The Redis store with the SQLite store's blocking test calls. Each runs in its own trio
    run with its own client (a client answers only in the loop that made it)."""

    def __init__(self, server: RedisServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(redis_link(server), *args, **kwargs)
        self.server = server

    def _sync(self, call: Callable[[RedisQuotaStore], Awaitable[T]]) -> T:
        clone = copy.copy(self)
        clone.link = RedisLink(self.link.settings)

        async def run() -> T:
            try:
                return await call(clone)
            finally:
                await clone.link.aclose()

        return trio.run(run)

    def admit_sync(self, request: QuotaRequest) -> Reservation:
        return self._sync(lambda store: store.admit(request))

    def settle_sync(self, held: RedisHeld, tokens: int) -> None:
        self._sync(lambda store: store.finish(held, "settle", tokens))

    def release_sync(self, held: RedisHeld) -> None:
        self._sync(lambda store: store.finish(held, "release", 0))

    def expire_sync(self, project_id: str = "proj") -> int:
        return self._sync(lambda store: store.expire(project_id))

    def close(self) -> None:
        """Nothing to close: every call closed its client."""


def stored_subject(store: object, subject: str) -> str:
    """How `store` names `subject` in its counters."""
    return key_part(subject) if isinstance(store, RedisQuotaStore) else subject_key(subject)


def counters(store: object) -> dict[tuple[str, str, str], int]:
    """(subject kind, stored subject, unit) -> used, over the counters the store holds."""
    if isinstance(store, SyncRedisStore):
        out = {}
        for key in store.server.command("KEYS", "*:c:*"):
            # gw:{project}:c:kind:subject:unit:window:start
            kind, subject, unit = key.split(":c:", 1)[1].split(":")[:3]
            out[(kind, subject, unit)] = int(store.server.command("GET", key))
        return out
    assert isinstance(store, SqliteQuotaStore)
    from gateway.db import open_database

    db = open_database(store.path)
    try:
        return {(kind, subject, unit): used for kind, subject, unit, used in db.execute(
            "SELECT subject_kind, subject_id, unit, used FROM quota_counters").fetchall()}
    finally:
        db.conn.close()
