"""`python -m gateway usage PROJECT`: the current quota counters of a project and its top users,
from the quota store the configuration names (SQLite, or Redis shared by every replica)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from gateway.cli.output import show
from gateway.cli.storage_commands import shared_database
from gateway.config import Config
from gateway.identity.projects import Project, ProjectStore


def add_usage_command(commands: Any, common: argparse.ArgumentParser) -> None:
    usage = commands.add_parser("usage", parents=[common],
                                help="current quota counters of a project and its top users")
    usage.add_argument("project_id", metavar="PROJECT")
    usage.add_argument("--top", type=int, default=10, metavar="N", help="users shown (10)")
    usage.add_argument("--json", action="store_true", help="print JSON")
    usage.set_defaults(func=_usage)


def _redis_usage(config: Config, project: Project, top: int) -> dict[str, Any] | None:
    """The usage report from Redis when `[quotas] store = "redis"`, else None."""
    import trio

    from gateway.quota.limits import settings_from_config
    from gateway.quota.redis import RedisQuotaStore
    from gateway.redis_link import RedisLink, redis_settings

    settings = settings_from_config(config)
    redis = redis_settings(config)
    if settings.store != "redis" or redis is None:
        return None

    async def read() -> dict[str, Any]:
        store = RedisQuotaStore(RedisLink(redis), settings)
        try:
            return await store.usage_report(project.id, datetime.now(UTC),
                                            budget=project.budget,
                                            user_quota=project.user_quota, top=top)
        finally:
            await store.link.aclose()

    return trio.run(read)


def _sqlite_usage(config: Config, project: Project, top: int) -> dict[str, Any]:
    from gateway.quota.sqlite import SqliteQuotaStore, usage_report

    quotas = SqliteQuotaStore.from_config(config)
    try:
        with quotas.transaction() as conn:
            return usage_report(conn, project.id, datetime.now(UTC), budget=project.budget,
                                user_quota=project.user_quota, top=top)
    finally:
        quotas.close()


def _usage(args: argparse.Namespace) -> int:
    config = Config.load(args.config)
    project = ProjectStore(shared_database(config)).get(args.project_id)
    report = _redis_usage(config, project, args.top)  # with the Redis store: every replica's
    if report is None:
        report = _sqlite_usage(config, project, args.top)
    if args.json:
        show(report)
    else:
        print(_usage_text(project.id, report))
    return 0


def _usage_text(project_id: str, report: dict[str, Any]) -> str:
    def lines(counters: list[dict[str, Any]]) -> list[str]:
        return [f"  {c['unit']:<8} {c['window']:<8} {c['used']:>12} / "
                f"{c['limit'] if c['limit'] is not None else '-':<12} resets {c['reset_at']}"
                for c in counters] or ["  (no usage in the current windows)"]

    out = [f"project {project_id} at {report['at']}", *lines(report["project"])]
    for user in report["users"]:
        out += [f"user {user['quota_subject']!r}", *lines(user["counters"])]
    return "\n".join(out)
