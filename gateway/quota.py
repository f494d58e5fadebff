"""The quota seam of the governed surface (SPEC §8).

The request path calls `admit` before the upstream call and `settle` or `release` after it. The
exact, multi-process SQLite implementation comes with the quotas issue; until then `Unlimited`
admits everything, so the rest of the lifecycle is already wired the way it will run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class QuotaRequest:
    project_id: str
    quota_subject: str
    estimated_tokens: int
    #: The project's `budget` and `user_quota` and the policy's declared quotas.
    limits: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reservation:
    request: QuotaRequest
    #: The `quota` field of the `policy` object (remaining requests/tokens), or None.
    remaining: dict[str, Any] | None = None
    #: `x-ratelimit-*` headers for the tightest applicable quota.
    headers: tuple[tuple[str, str], ...] = ()


class QuotaStore(Protocol):
    async def admit(self, request: QuotaRequest) -> Reservation:
        """Reserve one request and the estimate, or raise `QuotaExceeded`."""

    async def settle(self, reservation: Reservation, input_tokens: int, output_tokens: int
                     ) -> None:
        """Replace the estimate with the real usage."""

    async def release(self, reservation: Reservation) -> None:
        """Give the reservation back (upstream failure before any usage)."""


class Unlimited:
    """Admits everything and records nothing."""

    async def admit(self, request: QuotaRequest) -> Reservation:
        return Reservation(request=request)

    async def settle(self, reservation: Reservation, input_tokens: int, output_tokens: int
                     ) -> None:
        return None

    async def release(self, reservation: Reservation) -> None:
        return None
