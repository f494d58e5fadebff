"""The quota seam of the governed surface (docs/quotas.md), and its sans-I/O arithmetic.

The request path calls `admit` before the upstream call and `settle` or `release` after it.
`Unlimited` admits everything; `gateway.quota.sqlite.SqliteQuotaStore` holds quotas exactly across
worker processes. Everything here is pure: calendar windows in UTC, which limits apply (the
tightest wins), and how a store's counters turn into the `quota` field, the `x-ratelimit-*`
headers and a refusal. A Redis store reuses all of it and only keeps counters elsewhere.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from dsl import QuotaLimit
from gateway.errors import QuotaRefused

WINDOWS = ("minute", "hour", "daily", "weekly", "monthly")
PROJECT = "project"
USER = "user"
REASONS = {PROJECT: "PROJECT_QUOTA_EXCEEDED", USER: "USER_QUOTA_EXCEEDED"}
#: Units counted one per admitted request; `tool_calls` limits apply only to governed MCP tool
#: calls (gateway/mcp), which in turn count toward no other unit.
COUNTED_UNITS = ("requests", "tool_calls")
UNITS = ("requests", "tokens", "tool_calls")
#: Output tokens reserved when the request names no maximum (`[quotas] default_output_tokens`).
DEFAULT_OUTPUT_TOKENS = 1024


# --- calendar windows (UTC) ----------------------------------------------------------------------

def window_start(window: str, now: datetime) -> datetime:
    """The start of the UTC calendar `window` that contains `now` (a week starts on Monday)."""
    now = now.astimezone(UTC)
    if window == "minute":
        return now.replace(second=0, microsecond=0)
    if window == "hour":
        return now.replace(minute=0, second=0, microsecond=0)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "daily":
        return day
    if window == "weekly":
        return day - timedelta(days=day.weekday())
    if window == "monthly":
        return day.replace(day=1)
    raise ValueError(f"unknown quota window {window!r}; windows are {', '.join(WINDOWS)}")


def window_reset(window: str, now: datetime) -> datetime:
    """When the window that contains `now` ends (the start of the next one)."""
    start = window_start(window, now)
    if window == "minute":
        return start + timedelta(minutes=1)
    if window == "hour":
        return start + timedelta(hours=1)
    if window == "daily":
        return start + timedelta(days=1)
    if window == "weekly":
        return start + timedelta(days=7)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def retry_after_seconds(window: str, now: datetime) -> int:
    """Whole seconds until the window resets, rounded up so a client that waits them is in the
    next window; at least 1."""
    return max(1, math.ceil((window_reset(window, now) - now).total_seconds()))


@functools.lru_cache(maxsize=256)  # mostly window ends: the same few for a whole window
def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- which limits apply --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Limit:
    """One limit to enforce on one subject: `kind` is `project` or `user`."""

    kind: str
    subject: str
    unit: str
    window: str
    limit: int


def tightest(limits: Iterable[QuotaLimit]) -> dict[tuple[str, str], int]:
    """(unit, window) -> the smallest positive limit given for it; 0 (unlimited) is left out."""
    chosen: dict[tuple[str, str], int] = {}
    for item in limits:
        if item.limit > 0 and item.window in WINDOWS and item.unit in UNITS:
            key = (item.unit, item.window)
            chosen[key] = min(item.limit, chosen.get(key, item.limit))
    return chosen


@dataclass(frozen=True, slots=True)
class QuotaRequest:
    project_id: str
    quota_subject: str
    estimated_tokens: int
    #: The project's `budget` and the policy's `quota project` limits.
    project_limits: tuple[QuotaLimit, ...] = ()
    #: The project's `user_quota` and the policy's `quota user` limits.
    user_limits: tuple[QuotaLimit, ...] = ()
    #: A governed MCP tool call: only `tool_calls` limits apply to it, and to nothing else.
    tool_call: bool = False

    def limits(self) -> list[Limit]:
        """Every limit to enforce, the tightest per subject, unit and window."""
        return list(_limits(self.project_id, self.quota_subject, self.project_limits,
                            self.user_limits, self.tool_call))


# The same project, subject and limits come back request after request: worked out once.
@functools.lru_cache(maxsize=4096)
def _limits(project_id: str, quota_subject: str, project_limits: tuple[QuotaLimit, ...],
            user_limits: tuple[QuotaLimit, ...], tool_call: bool) -> tuple[Limit, ...]:
    out = [Limit(PROJECT, project_id, unit, window, limit)
           for (unit, window), limit in tightest(project_limits).items()]
    out += [Limit(USER, quota_subject, unit, window, limit)
            for (unit, window), limit in tightest(user_limits).items()]
    return tuple(limit for limit in out if (limit.unit == "tool_calls") == tool_call)


def estimate_tokens(input_tokens: int, max_output_tokens: int | None,
                    default_output_tokens: int = DEFAULT_OUTPUT_TOKENS) -> int:
    """Tokens to reserve: the input estimate plus the requested maximum output, or the default."""
    output = max_output_tokens if max_output_tokens is not None else default_output_tokens
    return max(0, int(input_tokens)) + max(0, int(output))


# --- a store's answer ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Usage:
    """One limit and its counter (reservations included) after admission."""

    limit: Limit
    used: int
    reset: datetime

    @property
    def remaining(self) -> int:
        return max(0, self.limit.limit - self.used)


@dataclass(frozen=True, slots=True)
class Reservation:
    request: QuotaRequest
    #: The `quota` field of the `policy` object (remaining requests/tokens), or None.
    remaining: dict[str, Any] | None = None
    #: `x-ratelimit-*` headers for the tightest applicable quota.
    headers: tuple[tuple[str, str], ...] = ()
    #: The store's handle on what it reserved (None: nothing was reserved).
    token: Any = None
    tokens_reserved: int = 0
    #: Why the quota was not enforced for this request (fail open: the store did not answer),
    #: recorded in its event; None when it was.
    unenforced: str | None = None


def quota_refusal(exhausted: Usage, usages: Sequence[Usage], now: datetime) -> QuotaRefused:
    """The 429 for `exhausted`, the first window used up: its reset, `Retry-After` and the
    `x-ratelimit-*` headers of every window."""
    limit = exhausted.limit
    who = "project" if limit.kind == PROJECT else "user"
    return QuotaRefused(
        f"The {who} {limit.unit} quota ({limit.limit} per {_period(limit.window)}) is used "
        f"up; it resets at {iso(exhausted.reset)}.",
        headers={"retry-after": str(retry_after_seconds(limit.window, now)),
                 **dict(rate_limit_headers(usages))},
        reason_code=REASONS[limit.kind], exhausted=exhausted,
        remaining=remaining_field(usages))


def _period(window: str) -> str:
    return {"daily": "day", "weekly": "week", "monthly": "month"}.get(window, window)


def first_exhausted(usages: Sequence[Usage]) -> Usage | None:
    """The limit that refuses the request, if any: no request is admitted once a counter has
    reached its limit. Of several, the one that resets last (waiting for it is what helps)."""
    full = [u for u in usages if u.used >= u.limit.limit]
    return max(full, key=lambda u: u.reset) if full else None


def remaining_field(usages: Sequence[Usage]) -> dict[str, Any] | None:
    """The `quota` field of the `policy` object: per subject, each limit's remaining amount."""
    if not usages:
        return None
    out: dict[str, Any] = {}
    for u in usages:
        out.setdefault(u.limit.kind, []).append({
            "unit": u.limit.unit, "window": u.limit.window, "limit": u.limit.limit,
            "remaining": u.remaining, "reset_at": iso(u.reset)})
    return out


def rate_limit_headers(usages: Sequence[Usage]) -> tuple[tuple[str, str], ...]:
    """`x-ratelimit-*` for the tightest quota of each unit: the one with the least remaining."""
    headers: list[tuple[str, str]] = []
    for unit in ("requests", "tokens"):
        of_unit = [u for u in usages if u.limit.unit == unit]
        if not of_unit:
            continue
        tight = min(of_unit, key=lambda u: (u.remaining, u.reset))
        headers += [(f"x-ratelimit-limit-{unit}", str(tight.limit.limit)),
                    (f"x-ratelimit-remaining-{unit}", str(tight.remaining)),
                    (f"x-ratelimit-reset-{unit}", iso(tight.reset))]
    return tuple(headers)


@dataclass(frozen=True, slots=True)
class QuotaSettings:
    """The `[quotas]` configuration section.

    Besides the store's tuning it holds quotas set in the configuration: `budget` and
    `user_quota` for every project, and `[quotas.projects.<id>]` for one project. They add to the
    project's own quotas and the policy's; the tightest limit wins.
    """

    #: Output tokens reserved when a request names no maximum.
    default_output_tokens: int = DEFAULT_OUTPUT_TOKENS
    #: A reservation not settled within this time is given back (its process died). Longer than
    #: the longest upstream exchange (`timeouts.total`).
    reservation_ttl_seconds: float = 960.0
    #: Threads running SQLite calls per worker. One suffices: writers queue on SQLite's lock.
    threads: int = 1
    #: Where counters live: `sqlite` (the gateway's file, one machine) or `redis` (shared by
    #: replicas, needs `[redis]`).
    store: str = "sqlite"
    #: When the Redis store does not answer: `closed` refuses (503 quota_unavailable), `open`
    #: admits with a per-replica bound and records that quotas were not enforced.
    on_store_error: str = "closed"
    #: Quotas of every project, from the configuration.
    budget: tuple[QuotaLimit, ...] = ()
    user_quota: tuple[QuotaLimit, ...] = ()
    #: project id -> (budget, user_quota) from `[quotas.projects.<id>]`.
    projects: Mapping[str, tuple[tuple[QuotaLimit, ...], tuple[QuotaLimit, ...]]] = \
        field(default_factory=dict)

    def configured_limits(self, project_id: str
                          ) -> tuple[tuple[QuotaLimit, ...], tuple[QuotaLimit, ...]]:
        """(project limits, user limits) that the configuration sets for `project_id`."""
        budget, user_quota = self.projects.get(project_id, ((), ()))
        return (*self.budget, *budget), (*self.user_quota, *user_quota)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, total_timeout: float = 900.0
                     ) -> QuotaSettings:
        known = {"default_output_tokens", "reservation_ttl_seconds", "threads", "budget",
                 "user_quota", "projects", "store", "on_store_error"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"[quotas]: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        default = int(data.get("default_output_tokens", DEFAULT_OUTPUT_TOKENS))
        ttl = float(data.get("reservation_ttl_seconds", total_timeout + 60.0))
        threads = int(data.get("threads", 1))
        if default < 0 or ttl <= 0 or threads < 1:
            raise ValueError("[quotas]: default_output_tokens >= 0, reservation_ttl_seconds > 0 "
                             "and threads >= 1 are required")
        store, on_error = data.get("store", "sqlite"), data.get("on_store_error", "closed")
        if store not in ("sqlite", "redis"):
            raise ValueError(f'[quotas] store must be "sqlite" or "redis", not {store!r}')
        if on_error not in ("closed", "open"):
            raise ValueError(f'[quotas] on_store_error must be "closed" or "open", '
                             f'not {on_error!r}')
        projects = data.get("projects", {})
        if not isinstance(projects, Mapping):
            raise ValueError("[quotas.projects] must be a table of project id -> "
                             "{budget, user_quota}")
        per_project = {}
        for project_id, entry in projects.items():
            where = f"[quotas.projects.{project_id}]"
            if not isinstance(entry, Mapping) or set(entry) - {"budget", "user_quota"}:
                raise ValueError(f"{where} takes only `budget` and `user_quota`")
            per_project[str(project_id)] = (
                _configured_quota(entry.get("budget"), f"{where} budget"),
                _configured_quota(entry.get("user_quota"), f"{where} user_quota"))
        return cls(default_output_tokens=default, reservation_ttl_seconds=ttl, threads=threads,
                   store=store, on_store_error=on_error,
                   budget=_configured_quota(data.get("budget"), "[quotas] budget"),
                   user_quota=_configured_quota(data.get("user_quota"), "[quotas] user_quota"),
                   projects=per_project)


def _configured_quota(value: object, what: str) -> tuple[QuotaLimit, ...]:
    """A quota written like a project's (`{requests = {daily = 1000}}`) as limits."""
    from gateway.errors import ProjectError
    from gateway.identity.projects import quota_limits, validate_quota

    try:
        return quota_limits(validate_quota(value, what))
    except ProjectError as exc:
        raise ValueError(str(exc)) from None


# --- the protocol --------------------------------------------------------------------------------

class QuotaStore(Protocol):
    async def admit(self, request: QuotaRequest) -> Reservation:
        """Reserve one request and the estimate, or raise `QuotaExceeded`."""

    async def settle(self, reservation: Reservation, input_tokens: int, output_tokens: int
                     ) -> None:
        """Replace the estimate with the real usage."""

    async def release(self, reservation: Reservation) -> None:
        """Give the reservation back (upstream failure before any usage)."""

    async def usage_report(self, project_id: str, now: datetime, *, budget: Any = None,
                           user_quota: Any = None, top: int = 10) -> dict[str, Any]:
        """The project's current usage per counter (the management API's usage endpoint)."""


class Unlimited:
    """Admits everything and records nothing."""

    async def admit(self, request: QuotaRequest) -> Reservation:
        return Reservation(request=request)

    async def settle(self, reservation: Reservation, input_tokens: int, output_tokens: int
                     ) -> None:
        return None

    async def release(self, reservation: Reservation) -> None:
        return None


def settings_from_config(config: Any) -> QuotaSettings:
    """The `[quotas]` section of `config`, or `ConfigError` naming what is wrong."""
    from gateway.errors import ConfigError

    try:
        return QuotaSettings.from_mapping(config.quotas, total_timeout=config.timeouts.total)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
