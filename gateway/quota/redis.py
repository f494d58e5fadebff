"""Exact quotas in Redis, shared by every replica of the gateway (docs/scale-out.md).

The same admission rule as `gateway.quota.sqlite` with the counters elsewhere: one Lua script
per request gives back expired reservations of the project, reads every applicable counter, and
either refuses or adds 1 request and the token estimate to all of them (project and user, every
window), all or nothing. Redis runs a script atomically, so N+k concurrent requests against a
limit of N admit exactly N, whichever replica they reach.

- Counters are keyed by project, subject, unit, window and the window's start (UTC calendar, as
  in SQLite) and expire at the end of their window plus `reservation_ttl_seconds`, when no open
  reservation can still touch them.
- A reservation is a record with an expiry and an entry in its project's index. Settlement and
  release are one script keyed by the reservation id that leaves a "done" marker, so a retry
  after a lost reply counts once. A replica that dies leaves reservations that the project's
  next admission gives back once they expire.
- Time is the gateway's clock (`clock`, injected in tests): replicas keep UTC via NTP.

When Redis does not answer, `[quotas] on_store_error` decides: `closed` refuses with
`503 quota_unavailable`; `open` admits, marks the request's event, and bounds each replica with
its own counters (`LocalBound`). The next admission that reaches Redis counts exactly again.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import trio

from gateway.errors import ConfigError, QuotaUnavailable, SharedStateUnavailable
from gateway.quota.limits import (
    COUNTED_UNITS,
    Limit,
    QuotaRequest,
    QuotaSettings,
    Reservation,
    Usage,
    first_exhausted,
    quota_refusal,
    rate_limit_headers,
    remaining_field,
    window_reset,
    window_start,
)
from gateway.quota.redis_scripts import ADMIT, EXPIRE, FINISH, USAGE
from gateway.redis_link import RedisLink

log = logging.getLogger("gateway.quota.limits")

#: Ids made of these are used in keys as they are; any other id is replaced by its digest.
_PLAIN = re.compile(r"[A-Za-z0-9._@+=-]{1,200}")
#: A token estimate above this is counted as this (Lua numbers are exact up to 2**53).
MAX_TOKENS = 10**15
#: Settlement attempts before the reservation is left to expire.
SETTLE_ATTEMPTS = 4


def key_part(value: str) -> str:
    """`value` as a key segment: itself when plain, else `h.` and a digest (separators, braces
    that would change a Cluster hash slot, huge or unencodable ids)."""
    if _PLAIN.fullmatch(value):
        return value
    from hashlib import sha256

    return "h." + sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class RedisHeld:
    """What one reservation holds: its id, its project's tag, and the counters it added to."""

    id: str
    tag: str
    #: (key, unit, counter expiry in ms)
    counters: tuple[tuple[str, str, int], ...]
    tokens: int

    def record(self) -> bytes:
        """The reservation as the admission script stored it."""
        return orjson.dumps({"t": str(self.tokens),
                             "c": [[key, unit, str(expiry)] for key, unit, expiry in self.counters]})


class RedisQuotaStore:
    """`QuotaStore` in Redis. `clock` returns the current UTC time (injected in tests)."""

    def __init__(self, link: RedisLink, settings: QuotaSettings | None = None, *,
                 clock: Callable[[], datetime] | None = None,
                 background: Callable[[], trio.Nursery | None] | None = None) -> None:
        from glide import Script

        self.link = link
        self.settings = settings or QuotaSettings()
        self.clock = clock or (lambda: datetime.now(UTC))
        self._background_nursery = background or (lambda: None)
        self._admit_script = Script(ADMIT)
        self._finish_script = Script(FINISH)
        self._expire_script = Script(EXPIRE)
        self.local = LocalBound()
        #: Admissions Redis could not answer, by what happened: `closed` (refused with 503) or
        #: `open` (admitted unenforced); read by the metrics.
        self.store_errors = {"closed": 0, "open": 0}

    # --- the QuotaStore protocol ---------------------------------------------------------------

    async def admit(self, request: QuotaRequest) -> Reservation:
        limits = request.limits()
        if not limits:
            return Reservation(request=request)
        now = self.clock()
        tokens = min(max(0, request.estimated_tokens), MAX_TOKENS)
        held = self._hold(request.project_id, limits, tokens, now)
        ms = _ms(now)
        args = [str(ms), self.link.key(held.tag, "r", ""), str(tokens), held.id,
                str(ms + self._ttl_ms()), str(self._record_until(held))]
        for (_, unit, expiry), limit in zip(held.counters, limits, strict=True):
            args += [unit, str(limit.limit), str(expiry)]
        keys = [self._index(held.tag), self.link.key(held.tag, "r", held.id),
                *(key for key, _, _ in held.counters)]
        try:
            reply = await self.link.call(
                lambda client: client.invoke_script(self._admit_script, keys=keys, args=args))
        except SharedStateUnavailable as exc:
            return self._store_error(request, limits, held, now, exc)
        before = [Usage(limit, int(used), window_reset(limit.window, now))
                  for limit, used in zip(limits, reply[1:], strict=True)]
        if not reply[0]:
            exhausted = first_exhausted(before)
            assert exhausted is not None  # the script refuses only when a counter is full
            raise quota_refusal(exhausted, before, now)
        after = [Usage(u.limit, u.used + (1 if u.limit.unit in COUNTED_UNITS else tokens), u.reset)
                 for u in before]
        self.local.remember(held.counters, after)
        return Reservation(request=request, remaining=remaining_field(after),
                           headers=rate_limit_headers(after), token=held, tokens_reserved=tokens)

    async def settle(self, reservation: Reservation, input_tokens: int, output_tokens: int
                     ) -> None:
        if isinstance(reservation.token, RedisHeld):
            used = min(max(0, input_tokens) + max(0, output_tokens), MAX_TOKENS)
            await self._after(reservation.token, "settle", used)

    async def release(self, reservation: Reservation) -> None:
        if isinstance(reservation.token, RedisHeld):
            await self._after(reservation.token, "release", 0)

    # --- settlement ----------------------------------------------------------------------------

    async def _after(self, held: RedisHeld, action: str, used: int) -> None:
        """Settle or release before the answer ends, so that a client sending its next request
        at once, to any replica, sees this one's usage in its `x-ratelimit-remaining-*`
        headers. One attempt in line, shielded (a client that leaves does not leave the
        counters wrong) and bounded by the link's request timeout; when it fails, the retries
        go on in the owner's nursery, so a failing Redis never holds an answer back. The
        script is keyed by the reservation id: a retry after a lost reply counts once."""
        with trio.CancelScope(shield=True):
            try:
                await self.finish(held, action, used, attempts=1)
                return
            except SharedStateUnavailable:
                pass
        nursery = self._background_nursery()
        if nursery is None:
            await self._finish_in_background(held, action, used)
            return
        nursery.start_soon(self._finish_in_background, held, action, used)

    async def _finish_in_background(self, held: RedisHeld, action: str, used: int) -> None:
        with trio.CancelScope(shield=True):  # shutdown waits for it: counters stay right
            try:
                await self.finish(held, action, used, first=1)
            except SharedStateUnavailable:
                log.warning("quota %s of reservation %s failed %d times; it will expire",
                            action, held.id, SETTLE_ATTEMPTS)

    async def finish(self, held: RedisHeld, action: str, used: int,
                     attempts: int = SETTLE_ATTEMPTS, first: int = 0) -> bool:
        """Settle or release, retried: the script is keyed by the reservation id, so a retry
        whose first attempt did reach Redis changes nothing. True when this call counted.
        Attempts `first` to `attempts - 1`; attempt k > 0 waits 50 ms * 4^(k-1) first."""
        keys = [self._index(held.tag), self.link.key(held.tag, "r", held.id),
                self.link.key(held.tag, "d", held.id)]
        args = [str(_ms(self.clock())), held.id, action, str(used), str(self._ttl_ms() * 2),
                held.record().decode()]
        for attempt in range(first, attempts):
            if attempt:
                await trio.sleep(0.05 * 4 ** (attempt - 1))
            try:
                return bool(await self.link.call(
                    lambda client: client.invoke_script(self._finish_script, keys=keys,
                                                        args=args)))
            except SharedStateUnavailable:
                if attempt == attempts - 1:
                    raise
        return False  # pragma: no cover - the loop returns or raises

    async def expire(self, project_id: str) -> int:
        """Give back the project's expired reservations now (admission does it as well); the
        number given back."""
        tag = "{" + key_part(project_id) + "}"
        args = [str(_ms(self.clock())), self.link.key(tag, "r", "")]
        return int(await self.link.call(lambda client: client.invoke_script(
            self._expire_script, keys=[self._index(tag)], args=args)))

    async def usage_report(self, project_id: str, now: datetime, *,
                           budget: Any = None, user_quota: Any = None, top: int = 10
                           ) -> dict[str, Any]:
        """`gateway.quota.sqlite.usage_report` from the counters in Redis (subjects as stored:
        ids that are not plain appear as `h.<digest>`)."""
        from glide import Script

        from gateway.quota.report import report_from_counters

        tag = "{" + key_part(project_id) + "}"
        counters = self.link.key(tag, "c", "")
        reply = await self.link.call(lambda client: client.invoke_script(
            Script(USAGE), keys=[self._index(tag)], args=[_glob_escape(counters) + "*"]))
        rows = []
        for raw_key, used in zip(reply[1::2], reply[2::2], strict=True):
            kind, subject, unit, window, start = _text(raw_key)[len(counters):].split(":")
            rows.append((kind, subject, unit, window, int(start), int(used)))
        return report_from_counters(rows, project_id, now, budget=budget,
                                    user_quota=user_quota, top=top,
                                    open_reservations=int(reply[0]))

    # --- Redis down ----------------------------------------------------------------------------

    def _store_error(self, request: QuotaRequest, limits: list[Limit], held: RedisHeld,
                     now: datetime, exc: SharedStateUnavailable) -> Reservation:
        if self.settings.on_store_error == "closed":
            self.store_errors["closed"] += 1
            raise QuotaUnavailable(
                "Quotas cannot be checked right now (the quota store does not answer); "
                "nothing is admitted until it does. Retry shortly.",
                headers={"retry-after": "1"}) from exc
        self.store_errors["open"] += 1
        usages = self.local.admit([key for key, _, _ in held.counters], limits, held.tokens,
                                  now)
        return Reservation(request=request, remaining=remaining_field(usages),
                           headers=rate_limit_headers(usages), token=None,
                           tokens_reserved=held.tokens, unenforced="quota_store_unavailable")

    # --- keys ----------------------------------------------------------------------------------

    def _hold(self, project_id: str, limits: list[Limit], tokens: int, now: datetime
              ) -> RedisHeld:
        tag = "{" + key_part(project_id) + "}"
        grace = self._ttl_ms()
        counters = tuple(
            (self.link.key(tag, "c", limit.kind, key_part(limit.subject), limit.unit,
                           limit.window, str(int(window_start(limit.window, now).timestamp()))),
             limit.unit, _ms(window_reset(limit.window, now)) + grace)
            for limit in limits)
        return RedisHeld(os.urandom(12).hex(), tag, counters, tokens)

    def _index(self, tag: str) -> str:
        return self.link.key(tag, "rs")

    def _ttl_ms(self) -> int:
        return int(self.settings.reservation_ttl_seconds * 1000)

    def _record_until(self, held: RedisHeld) -> int:
        """A reservation's record outlives its expiry until its counters go, so that the
        project's next admission can still give it back."""
        return max(expiry for _, _, expiry in held.counters) + 60_000


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    """`text` matched literally by a SCAN pattern (braces and dots are not special)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class LocalBound:
    """Per-replica counters for `on_store_error = "open"`: while Redis is down each replica
    starts from the last counts it saw in Redis and admits up to each limit on its own, so a
    tenant gets at most (replicas x limit) during an outage instead of no limit at all."""

    MAX_COUNTERS = 100_000

    def __init__(self) -> None:
        #: counter key -> used, in insertion order (oldest first, dropped beyond the cap).
        self._used: dict[str, int] = {}

    def remember(self, counters: tuple[tuple[str, str, int], ...], after: list[Usage]) -> None:
        for (key, _, _), usage in zip(counters, after, strict=True):
            self._set(key, usage.used)

    def admit(self, keys: list[str], limits: list[Limit], tokens: int, now: datetime
              ) -> list[Usage]:
        """Admit on this replica's counters (keys as in Redis: they name the window)."""
        before = [Usage(limit, self._used.get(key, 0), window_reset(limit.window, now))
                  for key, limit in zip(keys, limits, strict=True)]
        exhausted = first_exhausted(before)
        if exhausted is not None:
            raise quota_refusal(exhausted, before, now)
        after = []
        for key, usage in zip(keys, before, strict=True):
            used = usage.used + (1 if usage.limit.unit in COUNTED_UNITS else tokens)
            self._set(key, used)
            after.append(Usage(usage.limit, used, usage.reset))
        return after

    def _set(self, key: str, used: int) -> None:
        self._used.pop(key, None)
        self._used[key] = used
        while len(self._used) > self.MAX_COUNTERS:
            del self._used[next(iter(self._used))]


def quota_store_for(config: Any, settings: QuotaSettings, link: RedisLink | None, *,
                    background: Callable[[], trio.Nursery | None]) -> Any:
    """The store `[quotas] store` names: SQLite (the default) or Redis (needs `[redis]`)."""
    from gateway.quota.files import quota_database_path
    from gateway.quota.sqlite import SqliteQuotaStore

    if settings.store == "redis":
        if link is None:
            raise ConfigError('invalid configuration: [quotas] store = "redis" needs a [redis] '
                              'section with its url')
        return RedisQuotaStore(link, settings, background=background)
    return SqliteQuotaStore(quota_database_path(config), settings,
                            migrate_from=config.database_path)
