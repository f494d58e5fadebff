"""`python -m gateway ...`: serve, and manage accounts, keys, projects and policies.

Output is text on stdout (`--json` for JSON, `-q` for only ids); errors are one line on stderr
with exit status 1 (policy check failures print the diagnostics in the compiler format
instead); usage errors exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from gateway.admin.history import add_event_commands
from gateway.admin.registry import PolicyRegistry
from gateway.cli.output import add_output_options, configure_output, show
from gateway.cli.policies import add_policy_commands
from gateway.cli.setup_commands import add_setup_commands, admin_token_for_serving
from gateway.cli.simulate import add_simulate_command
from gateway.cli.storage_commands import (
    add_storage_commands,
    add_transfer_commands,
    pull_policies,
    shared_database,
)
from gateway.config import Config
from gateway.errors import (
    CommandError,
    ConfigError,
    DatabaseUnavailable,
    GatewayError,
    IdentityError,
    PolicyDirectoryError,
    PolicyFileError,
    ProjectError,
    SchemaMismatch,
    SharedStateUnavailable,
)
from gateway.identity.keys import PLANS, IdentityStore
from gateway.identity.projects import STATUSES, ProjectStore


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    configure_output(args)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PolicyFileError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    except (ConfigError, IdentityError, ProjectError, PolicyDirectoryError,
            CommandError, SharedStateUnavailable, SchemaMismatch, DatabaseUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except GatewayError as exc:  # from `simulate`: the API's own refusal, e.g. not linked
        print(f"error: {exc.code}: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH",
                        default=os.environ.get("GATEWAY_CONFIG") or None,
                        help="TOML configuration file (default: built-in defaults)")
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[common], help="run the gateway")
    serve.add_argument("--host", help="interface to bind (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default from config: 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default from config: 1)")
    serve.add_argument("--shutdown-grace", type=float, metavar="SECONDS",
                       help="time in-flight requests get after SIGTERM/SIGINT before streams "
                            "are ended (default from config: 20)")
    serve.set_defaults(func=_serve)

    accounts = commands.add_parser("accounts", help="manage accounts").add_subparsers(
        metavar="ACTION")
    create = accounts.add_parser("create", parents=[common], help="create an account")
    create.add_argument("name")
    create.add_argument("--plan", required=True, choices=PLANS)
    create.add_argument("--allow-duplicate-name", action="store_true",
                        help="create it even if an account of this name exists")
    create.set_defaults(func=_accounts_create)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(metavar="ACTION")
    kcreate = keys.add_parser("create", parents=[common],
                              help="create a key; prints the plaintext key once")
    kcreate.add_argument("--account", required=True, metavar="ID")
    kcreate.add_argument("--project", metavar="ID", help="bind the key to this project")
    kcreate.add_argument("--label", default="", metavar="TEXT")
    kcreate.set_defaults(func=_keys_create)
    klist = keys.add_parser("list", parents=[common], help="list keys (previews only)")
    klist.add_argument("--account", metavar="ID")
    klist.set_defaults(func=_keys_list)
    krevoke = keys.add_parser("revoke", parents=[common], help="revoke a key")
    krevoke.add_argument("key_id", metavar="KEY_ID")
    krevoke.set_defaults(func=_keys_revoke)
    _add_project_commands(commands, common)
    add_policy_commands(commands, common)
    add_simulate_command(commands, common)
    add_event_commands(commands, common)
    add_setup_commands(commands, common)
    add_storage_commands(commands, common)
    add_transfer_commands(commands, common)
    usage = commands.add_parser("usage", parents=[common],
                                help="current quota counters of a project and its top users")
    usage.add_argument("project_id", metavar="PROJECT")
    usage.add_argument("--top", type=int, default=10, metavar="N", help="users shown (10)")
    usage.add_argument("--json", action="store_true", help="print JSON")
    usage.set_defaults(func=_usage)
    add_output_options(parser)
    return parser


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("policy-gateway")
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown"


def _add_project_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    projects = commands.add_parser("projects", help="manage projects").add_subparsers(
        metavar="ACTION")
    create = projects.add_parser("create", parents=[common], help="create a project")
    create.add_argument("project_id", metavar="ID", help="slug, e.g. proj_support_bot")
    create.add_argument("--account", required=True, metavar="ID")
    create.add_argument("--name", required=True, metavar="TEXT",
                        help="label, reported as project_label")
    create.add_argument("--policy", metavar="POLICY_ID", help="link this policy")
    create.add_argument("--allow-inline-policy", action="store_true",
                        help="let an inline policy replace the project's policy")
    _add_quota_options(create)
    create.set_defaults(func=_projects_create)

    listing = projects.add_parser("list", parents=[common], help="list projects")
    listing.add_argument("--account", metavar="ID")
    listing.set_defaults(func=_projects_list)

    show = projects.add_parser("show", parents=[common], help="show a project and its grants")
    show.add_argument("project_id", metavar="ID")
    show.set_defaults(func=_projects_show)

    update = projects.add_parser("update", parents=[common], help="change a project")
    update.add_argument("project_id", metavar="ID")
    update.add_argument("--name", metavar="TEXT")
    update.add_argument("--status", choices=STATUSES)
    update.add_argument("--allow-inline-policy", action=argparse.BooleanOptionalAction,
                        default=None)
    _add_quota_options(update)
    update.set_defaults(func=_projects_update)

    link = projects.add_parser("link", parents=[common],
                               help="link a policy of the policies directory to a project")
    link.add_argument("project_id", metavar="PROJECT")
    link.add_argument("policy_id", metavar="POLICY_ID")
    link.set_defaults(func=_projects_link)
    unlink = projects.add_parser("unlink", parents=[common], help="unlink a project's policy")
    unlink.add_argument("project_id", metavar="PROJECT")
    unlink.set_defaults(func=_projects_unlink)

    grant = projects.add_parser("grant", parents=[common],
                                help="let a JWT user (its `sub`) use a project")
    grant.add_argument("project_id", metavar="PROJECT")
    grant.add_argument("user_id", metavar="USER_ID")
    grant.set_defaults(func=_projects_grant)
    revoke = projects.add_parser("revoke", parents=[common], help="remove a JWT user's grant")
    revoke.add_argument("project_id", metavar="PROJECT")
    revoke.add_argument("user_id", metavar="USER_ID")
    revoke.set_defaults(func=_projects_revoke)


def _add_quota_options(parser: argparse.ArgumentParser) -> None:
    example = 'e.g. \'{"requests": {"daily": 1000}, "tokens": {"monthly": 500000}}\''
    parser.add_argument("--budget", metavar="JSON", help=f"project quota, {example}")
    parser.add_argument("--user-quota", metavar="JSON", help=f"per-user quota, {example}")


def _print(value: Any) -> None:
    show(value)  # text by default; `--json` and `-q` (see gateway.cli.output)


def _store(args: argparse.Namespace) -> IdentityStore:
    return IdentityStore(shared_database(Config.load(args.config)))


def _accounts_create(args: argparse.Namespace) -> int:
    store = _store(args)
    same_name = [row[0] for row in store.db.execute(
        "SELECT id FROM accounts WHERE name = ? ORDER BY id", [args.name])]
    if same_name and not args.allow_duplicate_name:
        raise CommandError(f"an account named {args.name!r} exists already "
                           f"({', '.join(same_name)}): use it, or pass --allow-duplicate-name "
                           "to create another one")
    _print(asdict(store.create_account(args.name, args.plan)))
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    key, plaintext = _store(args).create_key(args.account, project_id=args.project,
                                             label=args.label)
    _print({**asdict(key), "key": plaintext})
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    _print([asdict(k) for k in _store(args).list_keys(args.account)])
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    _print(asdict(_store(args).revoke_key(args.key_id)))
    return 0


def _database(config: Config) -> Any:
    """The store of identity and policy revisions (SQLite, or PostgreSQL when configured)."""
    return shared_database(config)


def _quota_option(text: str | None, flag: str) -> object:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProjectError(f"{flag} is not valid JSON: {exc}") from None


def _known_policies(config: Config, db: Any) -> frozenset[str]:
    from gateway.cli.policies import escalation_settings
    from gateway.datadir import prepare_policies_dir

    prepare_policies_dir(config)
    pull_policies(config, db)
    return frozenset(PolicyRegistry.load(config.policies_dir, db,
                                         escalation=escalation_settings(config)).policies)


def _projects_create(args: argparse.Namespace) -> int:
    config = Config.load(args.config)
    db = _database(config)
    budget = _quota_option(args.budget, "--budget")
    user_quota = _quota_option(args.user_quota, "--user-quota")
    known = _known_policies(config, db) if args.policy else None
    project = ProjectStore(db).create(
        args.project_id, account_id=args.account, name=args.name, policy_id=args.policy,
        budget=budget, user_quota=user_quota, allow_inline_policy=args.allow_inline_policy,
        known_policies=known)
    _print(project.as_dict())
    return 0


def _projects_list(args: argparse.Namespace) -> int:
    db = _database(Config.load(args.config))
    _print([p.as_dict() for p in ProjectStore(db).list(args.account)])
    return 0


def _projects_show(args: argparse.Namespace) -> int:
    db = _database(Config.load(args.config))
    project = ProjectStore(db).get(args.project_id)
    users = [r[0] for r in db.execute(
        "SELECT user_id FROM project_grants WHERE project_id = ? ORDER BY user_id",
        [project.id])]
    _print({**project.as_dict(), "granted_users": users})
    return 0


def _projects_update(args: argparse.Namespace) -> int:
    db = _database(Config.load(args.config))
    changes: dict[str, Any] = {}
    for option in ("name", "status", "allow_inline_policy"):
        if getattr(args, option) is not None:
            changes[option] = getattr(args, option)
    if args.budget is not None:
        changes["budget"] = _quota_option(args.budget, "--budget")
    if args.user_quota is not None:
        changes["user_quota"] = _quota_option(args.user_quota, "--user-quota")
    if not changes:
        raise ProjectError("nothing to update: give --name, --status, --budget, --user-quota "
                           "or --[no-]allow-inline-policy")
    _print(ProjectStore(db).update(args.project_id, **changes).as_dict())
    return 0


def _projects_link(args: argparse.Namespace) -> int:
    config = Config.load(args.config)
    db = _database(config)
    project = ProjectStore(db).update(args.project_id, policy_id=args.policy_id,
                                      known_policies=_known_policies(config, db))
    _print(project.as_dict())
    return 0


def _projects_unlink(args: argparse.Namespace) -> int:
    db = _database(Config.load(args.config))
    _print(ProjectStore(db).update(args.project_id, policy_id=None).as_dict())
    return 0


def _projects_grant(args: argparse.Namespace) -> int:
    store = ProjectStore(_database(Config.load(args.config)))
    store.grant(args.user_id, args.project_id)
    _print({"user_id": args.user_id, "project_id": args.project_id,
            "user_projects": sorted(store.grants_for(args.user_id))})
    return 0


def _projects_revoke(args: argparse.Namespace) -> int:
    store = ProjectStore(_database(Config.load(args.config)))
    store.revoke_grant(args.user_id, args.project_id)
    _print({"user_id": args.user_id, "project_id": args.project_id,
            "user_projects": sorted(store.grants_for(args.user_id))})
    return 0


def _redis_usage(config: Config, project: Any, top: int) -> dict[str, Any] | None:
    """The usage report from Redis when `[quotas] store = "redis"`, else None."""
    from datetime import UTC, datetime

    import trio

    from gateway.quota.redis import RedisQuotaStore
    from gateway.quota.sqlite import settings_from_config
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


def _usage(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from gateway.quota.sqlite import SqliteQuotaStore, usage_report

    config = Config.load(args.config)
    project = ProjectStore(_database(config)).get(args.project_id)
    report = _redis_usage(config, project, args.top)  # with the Redis store: every replica's
    if report is None:
        quotas = SqliteQuotaStore.from_config(config)
        try:
            with quotas.transaction() as conn:
                report = usage_report(conn, project.id, datetime.now(UTC),
                                      budget=project.budget, user_quota=project.user_quota,
                                      top=args.top)
        finally:
            quotas.close()
    if args.json:
        _print(report)
        return 0

    def lines(counters: list[dict[str, Any]]) -> list[str]:
        return [f"  {c['unit']:<8} {c['window']:<8} {c['used']:>12} / "
                f"{c['limit'] if c['limit'] is not None else '-':<12} resets {c['reset_at']}"
                for c in counters] or ["  (no usage in the current windows)"]

    out = [f"project {project.id} at {report['at']}", *lines(report["project"])]
    for user in report["users"]:
        out += [f"user {user['quota_subject']!r}", *lines(user["counters"])]
    print("\n".join(out))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from gateway.serve import CONFIG_ENV, hypercorn_config, serve

    # Fail fast on a bad file, before any worker starts; the workers read the same token.
    config, notices = admin_token_for_serving(Config.load(args.config))
    if config.postgres is not None:
        from gateway.storage.postgres import Postgres, require_schema

        with Postgres(config.postgres) as pg:  # a missing or newer schema stops start-up here
            require_schema(pg)
    if args.config:
        os.environ[CONFIG_ENV] = os.path.abspath(args.config)
    workers = args.workers if args.workers is not None else config.workers
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    grace = args.shutdown_grace if args.shutdown_grace is not None else config.shutdown_grace
    if not grace >= 0:
        raise ConfigError("--shutdown-grace must be at least 0")
    hyper = hypercorn_config(config, f"{args.host or config.host}:{args.port or config.port}",
                             workers)
    # One worker serves in this process; more are spawned processes sharing the socket. Both
    # shut down gracefully on SIGTERM/SIGINT (gateway/http/draining.py).
    return serve(hyper, workers, grace=grace, log_level=config.log_level, notices=notices)
