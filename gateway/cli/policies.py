"""`python -m gateway policies add|list|show|update|delete|revisions|validate`: the policy
commands that mirror the management API.

The CLI works on the configured database and policies directory directly, so it needs no
running gateway; a running one picks the changes up by itself (it reloads the policies
directory when a file changes). Whoever records a policy revision emits its `revision` event:
the CLI writes the events of the revisions it records straight into the event store.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dsl
from gateway.admin.registry import LoadedPolicy, PolicyRegistry, PolicyRevision, list_revisions
from gateway.admin.reload import placed_policy, revision_event, write_policy_file
from gateway.cli.output import OUTPUT, render, show
from gateway.cli.storage_commands import publish_policies, pull_policies, shared_database
from gateway.config import Config
from gateway.datadir import prepare_policies_dir
from gateway.errors import CommandError, PolicyConflict, PolicyFileError, PolicyIdRefused
from gateway.policy.escalation import EscalationSettings, escalation_diagnostic

# --- policies ---------------------------------------------------------------------------------

def add_policy_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    policies = commands.add_parser(
        "policies", help="manage the served policies (the policies directory, or PostgreSQL "
                         "with [database] url)").add_subparsers(
        metavar="ACTION")
    add = policies.add_parser("add", parents=[common],
                              help="check a policy file and add it to the served policies "
                                   "(a new revision if the policy exists)")
    add.add_argument("file", metavar="FILE", help=".pol or JSON policy file")
    add.set_defaults(func=_policies_add)
    listing = policies.add_parser("list", parents=[common],
                                  help="list loaded policies and files that fail their check")
    listing.set_defaults(func=_policies_list)
    show_ = policies.add_parser("show", parents=[common], help="a policy and its source")
    show_.add_argument("policy_id", metavar="POLICY_ID")
    show_.set_defaults(func=_policies_show)
    update = policies.add_parser("update", parents=[common],
                                 help="replace a policy's source with FILE (a new revision)")
    update.add_argument("policy_id", metavar="POLICY_ID")
    update.add_argument("file", metavar="FILE", help=".pol or JSON policy file")
    update.set_defaults(func=_policies_update)
    delete = policies.add_parser("delete", parents=[common], help="delete a policy's file")
    delete.add_argument("policy_id", metavar="POLICY_ID")
    delete.set_defaults(func=_policies_delete)
    revisions = policies.add_parser("revisions", parents=[common],
                                    help="a policy's revisions, oldest first")
    revisions.add_argument("policy_id", metavar="POLICY_ID")
    revisions.set_defaults(func=_policies_revisions)
    validate = policies.add_parser("validate", parents=[common],
                                   help="check a policy file without adding it (exit 1 if invalid)")
    validate.add_argument("file", metavar="FILE", help=".pol or JSON policy file")
    validate.set_defaults(func=_policies_validate)


def database(config: Config) -> Any:
    """The store of policy revisions (SQLite, or PostgreSQL when configured)."""
    return shared_database(config)


def cli_user_id() -> str:
    """Who a CLI edit is by: the operating-system user, marked as coming from the CLI."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return "cli:unknown"


def _record_events(config: Config, changes: Sequence[PolicyRevision]) -> None:
    """Store the `revision` events of the revisions this command recorded."""
    from gateway.errors import EventStorageError
    from gateway.events.pg_store import command_event_store

    if not changes:
        return
    store = command_event_store(config)
    try:
        store.write([revision_event(change, cli_user_id()) for change in changes])
    except EventStorageError as exc:  # the change itself is made; say what was not recorded
        print(f"warning: {len(changes)} revision event(s) not stored: {exc}", file=sys.stderr)
    finally:
        store.close()


def escalation_settings(config: Config) -> EscalationSettings:
    """The `[escalation]` targets policies are checked against, as the server checks them."""
    return EscalationSettings.from_mapping(config.escalation, os.environ)


def load_registry(config: Config, db: Any,
                  previous: PolicyRegistry | None = None) -> PolicyRegistry:
    prepare_policies_dir(config)
    pull_policies(config, db)
    registry = PolicyRegistry.load(config.policies_dir, db, previous=previous,
                                   escalation=escalation_settings(config))
    _record_events(config, registry.changes)
    return registry


def _read_source(file: str) -> str:
    try:
        return Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyFileError([dsl.Diagnostic(file, 1, 1, "error",
                                              f"cannot read policy file: {exc}",
                                              "policy files are UTF-8 text")]) from None


def _summary(loaded: LoadedPolicy) -> dict[str, Any]:
    return {"policy_id": loaded.policy_id, "name": loaded.name, "revision": loaded.revision,
            "path": loaded.path, "sha256": loaded.sha256}


def _loaded(registry: PolicyRegistry, policy_id: str) -> LoadedPolicy:
    loaded = registry.get(policy_id)
    if loaded is None:
        raise CommandError(f"unknown policy {policy_id!r}: no loaded policy has this id "
                           "(`policies list` shows them)")
    return loaded


def _place(config: Config, db: Any, file: str, policy_id: str | None) -> LoadedPolicy:
    source = _read_source(file)
    try:
        compiled = dsl.compile_policy(source, filename=file)
    except dsl.PolicyError as failure:
        raise PolicyFileError(failure.diagnostics, source) from None
    registry = load_registry(config, db)
    if policy_id is None:  # `add`: create, or a new revision of the same file
        replacing = registry.get(compiled.policy_id)
        if replacing is not None and Path(replacing.path).stem != compiled.policy_id:
            raise CommandError(f"policy {compiled.policy_id!r} is already defined in "
                               f"{replacing.path}: edit that file, or use `policies update`")
    else:
        replacing = _loaded(registry, policy_id)
    try:
        target = write_policy_file(config.policies_dir, source, registry, replacing=replacing,
                                   filename=file, escalation=escalation_settings(config))
        publish_policies(config, db, [target.name, *([Path(replacing.path).name]
                                                     if replacing else [])])
        placed = placed_policy(load_registry(config, db, registry), compiled.policy_id, target)
    except (PolicyIdRefused, PolicyConflict) as exc:
        raise CommandError(str(exc)) from None
    _copy_cases(Path(file), target)
    return placed


def _copy_cases(source: Path, target: Path) -> None:
    """The golden cases beside the policy's file (`x.pol` -> `x.cases.json`) go with it, so
    that `python -m dsl test` of the policies directory runs them."""
    from dsl.golden import cases_path

    cases, placed_cases = cases_path(source), cases_path(target)
    if cases.is_file() and cases.resolve() != placed_cases.resolve():
        placed_cases.write_bytes(cases.read_bytes())


def _policies_add(args: argparse.Namespace) -> int:
    config = Config.load(args.config)
    show(_summary(_place(config, database(config), args.file, None)))
    return 0


def _policies_update(args: argparse.Namespace) -> int:
    config = Config.load(args.config)
    show(_summary(_place(config, database(config), args.file, args.policy_id)))
    return 0


def _policies_list(args: argparse.Namespace) -> int:
    config = Config.load(args.config)
    registry = load_registry(config, database(config))
    policies = [_summary(p) for p in sorted(registry.policies.values(), key=lambda p: p.policy_id)]
    failing: list[dict[str, Any]] = []
    for path, diagnostics in sorted(registry.errors.items()):
        first = next((d for d in diagnostics if d.severity == "error"), None)
        failing.append({"path": path, "diagnostic": first.as_dict() if first else None})
    if OUTPUT.json or OUTPUT.quiet:
        show({"policies": policies, "errors": failing} if OUTPUT.json else policies)
        return 0
    print(render(policies, columns=("policy_id", "revision", "name", "path")))
    for problem in failing:
        diagnostic: dict[str, Any] = problem["diagnostic"] or {}
        print(f"failing check: {problem['path']}:{diagnostic.get('line')}:"
              f"{diagnostic.get('column')}: {diagnostic.get('message')}")
    return 0


def _policies_show(args: argparse.Namespace) -> int:
    config = Config.load(args.config)
    loaded = _loaded(load_registry(config, database(config)), args.policy_id)
    show({**_summary(loaded), "classification": loaded.classification, "source": loaded.source})
    return 0


def _policies_delete(args: argparse.Namespace) -> int:
    config = Config.load(args.config)
    db = database(config)
    registry = load_registry(config, db)
    loaded = _loaded(registry, args.policy_id)
    Path(loaded.path).unlink(missing_ok=True)
    publish_policies(config, db, [Path(loaded.path).name])
    after = load_registry(config, db, registry)
    revisions = list_revisions(db, args.policy_id)
    show({"policy_id": args.policy_id, "deleted": after.get(args.policy_id) is None,
          "revision": revisions[-1].revision if revisions else None})
    return 0


def _policies_revisions(args: argparse.Namespace) -> int:
    config = Config.load(args.config)
    db = database(config)
    load_registry(config, db)  # record what the directory holds now, as the gateway would
    revisions = list_revisions(db, args.policy_id)
    if not revisions:
        raise CommandError(f"policy {args.policy_id!r} has no revisions")
    show([{"policy_id": r.policy_id, "revision": r.revision, "edit_type": r.edit_type,
           "created_at": r.created_at, "sha256": r.sha256, "name": r.name,
           "classification": r.classification, "path": r.path, "source": r.source}
          for r in revisions],
         columns=("revision", "edit_type", "created_at", "name", "sha256"))
    return 0


def _policies_validate(args: argparse.Namespace) -> int:
    source = _read_source(args.file)
    try:
        compiled = dsl.compile_policy(source, filename=args.file)
        policy_id: str | None = compiled.policy_id
        diagnostics = dsl.check(source, args.file)
        # As the gateway loads it: its escalation path must be a configured destination.
        problem = escalation_diagnostic(
            compiled, escalation_settings(Config.load(args.config)), source, args.file)
        if problem is not None:
            policy_id, diagnostics = None, [*diagnostics, problem]
    except dsl.PolicyError as failure:
        policy_id, diagnostics = None, failure.diagnostics
    valid = policy_id is not None
    if OUTPUT.json:
        show({"valid": valid, "policy_id": policy_id,
              "diagnostics": [d.as_dict() for d in diagnostics]})
    elif not OUTPUT.quiet:
        for diagnostic in diagnostics:
            print(diagnostic.render(source))
        print(f"{args.file}: valid, policy {policy_id!r}" if valid
              else f"{args.file}: invalid")
    return 0 if valid else 1
