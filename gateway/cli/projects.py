"""`python -m gateway projects ...`: create, list, show and change projects, link their policy,
and grant JWT users access. Identity and policies are read from the shared database (SQLite, or
PostgreSQL when configured)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway.admin.registry import PolicyRegistry
from gateway.cli.output import show
from gateway.cli.storage_commands import pull_policies, shared_database
from gateway.config import Config
from gateway.errors import ProjectError
from gateway.identity.projects import STATUSES, ProjectStore


def add_project_commands(commands: Any, common: argparse.ArgumentParser) -> None:
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

    one = projects.add_parser("show", parents=[common], help="show a project and its grants")
    one.add_argument("project_id", metavar="ID")
    one.set_defaults(func=_projects_show)

    update = projects.add_parser("update", parents=[common], help="change a project")
    update.add_argument("project_id", metavar="ID")
    update.add_argument("--name", metavar="TEXT")
    update.add_argument("--status", choices=STATUSES)
    update.add_argument("--allow-inline-policy", action=argparse.BooleanOptionalAction,
                        default=None)
    _add_quota_options(update)
    update.set_defaults(func=_projects_update)
    _add_link_and_grant_commands(projects, common)


def _add_link_and_grant_commands(projects: Any, common: argparse.ArgumentParser) -> None:
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


def _project_store(args: argparse.Namespace) -> ProjectStore:
    return ProjectStore(shared_database(Config.load(args.config)))


def _projects_create(args: argparse.Namespace) -> int:
    config = Config.load(args.config)
    db = shared_database(config)
    budget = _quota_option(args.budget, "--budget")
    user_quota = _quota_option(args.user_quota, "--user-quota")
    known = _known_policies(config, db) if args.policy else None
    project = ProjectStore(db).create(
        args.project_id, account_id=args.account, name=args.name, policy_id=args.policy,
        budget=budget, user_quota=user_quota, allow_inline_policy=args.allow_inline_policy,
        known_policies=known)
    show(project.as_dict())
    return 0


def _projects_list(args: argparse.Namespace) -> int:
    show([p.as_dict() for p in _project_store(args).list(args.account)])
    return 0


def _projects_show(args: argparse.Namespace) -> int:
    db = shared_database(Config.load(args.config))
    project = ProjectStore(db).get(args.project_id)
    users = [r[0] for r in db.execute(
        "SELECT user_id FROM project_grants WHERE project_id = ? ORDER BY user_id",
        [project.id])]
    show({**project.as_dict(), "granted_users": users})
    return 0


def _projects_update(args: argparse.Namespace) -> int:
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
    show(_project_store(args).update(args.project_id, **changes).as_dict())
    return 0


def _projects_link(args: argparse.Namespace) -> int:
    config = Config.load(args.config)
    db = shared_database(config)
    project = ProjectStore(db).update(args.project_id, policy_id=args.policy_id,
                                      known_policies=_known_policies(config, db))
    show(project.as_dict())
    return 0


def _projects_unlink(args: argparse.Namespace) -> int:
    show(_project_store(args).update(args.project_id, policy_id=None).as_dict())
    return 0


def _show_grants(store: ProjectStore, args: argparse.Namespace) -> None:
    show({"user_id": args.user_id, "project_id": args.project_id,
          "user_projects": sorted(store.grants_for(args.user_id))})


def _projects_grant(args: argparse.Namespace) -> int:
    store = _project_store(args)
    store.grant(args.user_id, args.project_id)
    _show_grants(store, args)
    return 0


def _projects_revoke(args: argparse.Namespace) -> int:
    store = _project_store(args)
    store.revoke_grant(args.user_id, args.project_id)
    _show_grants(store, args)
    return 0
