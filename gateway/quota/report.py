"""The usage report of a project (`python -m gateway usage`, the management API): the
current-window counters of the project and of its busiest users, from the counter rows of
either quota store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from gateway.quota.limits import PROJECT, WINDOWS, iso, window_reset, window_start


def report_from_counters(rows: Sequence[tuple[str, str, str, str, int, int]], project_id: str,
                         now: datetime, *, budget: Mapping[str, Mapping[str, int]] | None,
                         user_quota: Mapping[str, Mapping[str, int]] | None, top: int,
                         open_reservations: int) -> dict[str, Any]:
    """The usage report from counter rows (kind, subject, unit, window, window start, used) of
    any store; rows of past windows are left out."""
    current = {w: int(window_start(w, now).timestamp()) for w in WINDOWS}
    project: list[dict[str, Any]] = []
    users: dict[str, list[dict[str, Any]]] = {}
    for kind, subject, unit, window, start, used in rows:
        if current.get(window) != start:
            continue
        limits = (budget if kind == PROJECT else user_quota) or {}
        entry = {"unit": unit, "window": window, "used": used,
                 "limit": limits.get(unit, {}).get(window) or None,
                 "reset_at": iso(window_reset(window, now))}
        (project if kind == PROJECT else users.setdefault(subject, [])).append(entry)

    def requests_used(item: tuple[str, list[dict[str, Any]]]) -> tuple[int, int]:
        counters = item[1]
        return (max((c["used"] for c in counters if c["unit"] == "requests"), default=0),
                max((c["used"] for c in counters if c["unit"] == "tokens"), default=0))

    ranked = sorted(users.items(), key=requests_used, reverse=True)[:top]
    order = {w: i for i, w in enumerate(WINDOWS)}
    for counters in [project, *(c for _, c in ranked)]:
        counters.sort(key=lambda c: (c["unit"], order[c["window"]]))
    return {"project_id": project_id, "at": iso(now), "project": project,
            "users": [{"quota_subject": s, "counters": c} for s, c in ranked],
            "open_reservations": open_reservations}
