"""The management commands of `python -m gateway` that mirror the management API (SPEC §10):
`policies add|list|show|update|delete|revisions|validate` and `simulate`, plus the output
options every command shares (human-readable text by default, `--json`, `-q`).

The CLI works on the configured database and policies directory directly, so it needs no
running gateway; a running one picks the changes up by itself (it reloads the policies
directory when a file changes and re-reads projects and keys when the database changes).
Whoever records a policy revision emits its `revision` event: the CLI writes the events of the
revisions it records straight into the event store.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

import dsl
from gateway.admin.registry import (
    LoadedPolicy,
    PolicyFileError,
    PolicyRegistry,
    PolicyRevision,
    list_revisions,
)
from gateway.admin.reload import (
    PolicyConflict,
    PolicyIdRefused,
    placed_policy,
    revision_event,
    write_policy_file,
)
from gateway.config import Config
from gateway.identity.projects import ProjectError, ProjectStore

SURFACES = ("chat.completions", "messages", "responses")


class CommandError(ValueError):
    """A management command cannot do what it was asked (unknown policy, conflicting file,
    unreadable request body). Caused by the user of the CLI; the message says what to fix."""


# --- output -----------------------------------------------------------------------------------

@dataclass
class OutputMode:
    json: bool = False
    quiet: bool = False


#: Set once per run by `configure_output`, read by `show`.
OUTPUT = OutputMode()


def add_output_options(parser: argparse.ArgumentParser, *, skip: Iterable[str] = ("serve",)
                       ) -> None:
    """Give every command under `parser` `--json` and `-q/--quiet`, except commands named in
    `skip` and those that define their own `--json` (their output has its own shape)."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for name, sub in action.choices.items():
            if name in skip:
                continue
            if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                add_output_options(sub, skip=skip)
            elif "--json" not in sub._option_string_actions:
                sub.add_argument("--json", action="store_true", help="print JSON")
                sub.add_argument("-q", "--quiet", action="store_true",
                                 help="print only the id (the plaintext key for `keys create`)")


def configure_output(args: argparse.Namespace) -> None:
    OUTPUT.json = bool(getattr(args, "json", False))
    OUTPUT.quiet = bool(getattr(args, "quiet", False))


def show(value: Any, *, columns: Sequence[str] | None = None) -> None:
    """Print a command's result: JSON with `--json`, only ids with `-q`, else text."""
    if OUTPUT.json:
        print(json.dumps(value, indent=2, sort_keys=True))
    elif OUTPUT.quiet:
        items = value if isinstance(value, list) else [value]
        for item in items:
            ident = _identifier(item)
            if ident is not None:
                print(ident)
    else:
        print(render(value, columns=columns))


def _identifier(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    for name in ("key", "id", "policy_id", "project_id"):
        if value.get(name) is not None:
            return value[name]
    return None


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True) if value else "-"
    return str(value)


def render(value: Any, *, columns: Sequence[str] | None = None) -> str:
    """Text for people: an object as aligned `field  value` lines (multi-line text such as a
    policy source after them), a list of objects as a table."""
    if isinstance(value, list):
        if not value:
            return "(none)"
        if not all(isinstance(item, Mapping) for item in value):
            return "\n".join(_cell(item) for item in value)
        names = list(columns or [k for k, v in value[0].items()
                                 if not isinstance(v, (dict, list)) and k != "source"])
        rows = [names] + [[_cell(item.get(n)) for n in names] for item in value]
        widths = [max(len(row[i]) for row in rows) for i in range(len(names))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                         for row in rows)
    if isinstance(value, Mapping):
        fields = {k: v for k, v in value.items()
                  if not (isinstance(v, str) and "\n" in v)}
        blocks = [f"{k}:\n{v.rstrip()}" for k, v in value.items()
                  if isinstance(v, str) and "\n" in v]
        width = max((len(k) for k in fields), default=0)
        lines = [f"{k.ljust(width)}  {_cell(v)}" for k, v in fields.items()]
        return "\n".join(lines + blocks)
    return _cell(value)


# --- policies ---------------------------------------------------------------------------------

def add_policy_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    policies = commands.add_parser("policies", help="manage the policies directory").add_subparsers(
        metavar="ACTION")
    add = policies.add_parser("add", parents=[common],
                              help="check a policy file and put it in the policies directory "
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


def _database(config: Config) -> sqlite_utils.Database:
    from gateway.db import open_database

    return open_database(config.database_path)


def cli_user_id() -> str:
    """Who a CLI edit is by: the operating-system user, marked as coming from the CLI."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return "cli:unknown"


def _record_events(config: Config, changes: Sequence[PolicyRevision]) -> None:
    """Store the `revision` events of the revisions this command recorded."""
    from gateway.events.store import EventStorageError, EventStore

    if not changes:
        return
    store = EventStore(config.database_path)
    try:
        store.write([revision_event(change, cli_user_id()) for change in changes])
    except EventStorageError as exc:  # the change itself is made; say what was not recorded
        print(f"warning: {len(changes)} revision event(s) not stored: {exc}", file=sys.stderr)
    finally:
        store.close()


def _load(config: Config, db: sqlite_utils.Database,
          previous: PolicyRegistry | None = None) -> PolicyRegistry:
    registry = PolicyRegistry.load(config.policies_dir, db, previous=previous)
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


def _place(config: Config, db: sqlite_utils.Database, file: str, policy_id: str | None
           ) -> LoadedPolicy:
    source = _read_source(file)
    try:
        compiled = dsl.compile_policy(source, filename=file)
    except dsl.PolicyError as failure:
        raise PolicyFileError(failure.diagnostics, source) from None
    registry = _load(config, db)
    if policy_id is None:  # `add`: create, or a new revision of the same file
        replacing = registry.get(compiled.policy_id)
        if replacing is not None and Path(replacing.path).stem != compiled.policy_id:
            raise CommandError(f"policy {compiled.policy_id!r} is already defined in "
                               f"{replacing.path}: edit that file, or use `policies update`")
    else:
        replacing = _loaded(registry, policy_id)
    try:
        target = write_policy_file(config.policies_dir, source, registry, replacing=replacing,
                                   filename=file)
        return placed_policy(_load(config, db, registry), compiled.policy_id, target)
    except (PolicyIdRefused, PolicyConflict) as exc:
        raise CommandError(str(exc)) from None


def _policies_add(args: argparse.Namespace) -> int:
    config = Config.load(args.config)
    show(_summary(_place(config, _database(config), args.file, None)))
    return 0


def _policies_update(args: argparse.Namespace) -> int:
    config = Config.load(args.config)
    show(_summary(_place(config, _database(config), args.file, args.policy_id)))
    return 0


def _policies_list(args: argparse.Namespace) -> int:
    config = Config.load(args.config)
    registry = _load(config, _database(config))
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
    loaded = _loaded(_load(config, _database(config)), args.policy_id)
    show({**_summary(loaded), "classification": loaded.classification, "source": loaded.source})
    return 0


def _policies_delete(args: argparse.Namespace) -> int:
    config = Config.load(args.config)
    db = _database(config)
    registry = _load(config, db)
    loaded = _loaded(registry, args.policy_id)
    Path(loaded.path).unlink(missing_ok=True)
    after = _load(config, db, registry)
    revisions = list_revisions(db, args.policy_id)
    show({"policy_id": args.policy_id, "deleted": after.get(args.policy_id) is None,
          "revision": revisions[-1].revision if revisions else None})
    return 0


def _policies_revisions(args: argparse.Namespace) -> int:
    config = Config.load(args.config)
    db = _database(config)
    _load(config, db)  # record what the directory holds now, as the gateway would
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
        policy_id: str | None = dsl.compile_policy(source, filename=args.file).policy_id
        diagnostics = dsl.check(source, args.file)
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


# --- simulate ---------------------------------------------------------------------------------

def add_simulate_command(commands: Any, common: argparse.ArgumentParser) -> None:
    simulate = commands.add_parser(
        "simulate", parents=[common],
        help="the decision a project's policy takes on a request, without the upstream")
    simulate.add_argument("project_id", metavar="PROJECT")
    given = simulate.add_mutually_exclusive_group(required=True)
    given.add_argument("--text", metavar="TEXT", help="a user message to decide on")
    given.add_argument("--body", metavar="FILE",
                       help="a request body of the surface's API, as JSON ('-' for stdin)")
    simulate.add_argument("--surface", choices=SURFACES, default="chat.completions")
    simulate.add_argument("--model", default="gpt-4o-mini", help="model, with --text")
    simulate.add_argument("--target", metavar="LABEL", help="policy_target")
    simulate.add_argument("--user", metavar="ID", help="policy_user")
    simulate.set_defaults(func=_simulate)


def _simulation_body(args: argparse.Namespace) -> dict[str, Any]:
    if args.body is not None:
        try:
            raw = sys.stdin.read() if args.body == "-" else Path(args.body).read_text("utf-8")
            body = json.loads(raw)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CommandError(f"cannot read the request body {args.body}: {exc}") from None
        if not isinstance(body, dict):
            raise CommandError("the request body must be a JSON object")
    elif args.surface == "responses":
        body = {"model": args.model, "input": args.text}
    else:
        body = {"model": args.model, "messages": [{"role": "user", "content": args.text}]}
        if args.surface == "messages":
            body["max_tokens"] = 1024
    body["surface"] = args.surface
    body["policy_project_id"] = args.project_id
    for name, value in (("policy_target", args.target), ("policy_user", args.user)):
        if value is not None:
            body[name] = value
    return body


def _run_simulation(config: Config, body: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """The gateway's own simulation path, on the database: returns the answer and the events
    it recorded (the simulation event, and revisions if this load recorded any)."""
    from gateway.admin.registry import list_revisions
    from gateway.identity.credentials import resolve_project
    from gateway.identity.keys import Caller, IdentityCache
    from gateway.policy.governance import GatewayFields, InlinePolicies
    from gateway.policy.prepared import prepare_request, simulate, simulated_adapter
    from gateway.policy.rollouts import Rollouts

    db = _database(config)
    events: list[Any] = []
    try:
        registry = _load(config, db)
        directory = IdentityCache(db)
        project = ProjectStore(db).get(body["policy_project_id"])
        account = directory.account(project.account_id)
        if account is None:
            raise ProjectError(f"the account of project {project.id!r} no longer exists")
        caller = Caller(account=account, key=None, user_id="cli")

        def resolve(fields: GatewayFields) -> Any:
            found = resolve_project(directory, caller, fields.project_id)
            return found, registry.get(found.policy_id) if found.policy_id else None

        rollouts = Rollouts(events.append, lambda policy_id, revision: next(
            (r for r in list_revisions(db, policy_id) if r.revision == revision), None))
        adapter = simulated_adapter({}, body)
        request = prepare_request(adapter, {}, body, caller, resolve, InlinePolicies())
        answer, event = simulate(adapter, caller, request, rollouts.preview,
                                 config.always_blocked_categories)
        events.append(event)
    finally:
        db.conn.close()
    return answer, events


def _simulate(args: argparse.Namespace) -> int:
    from gateway.events.store import EventStorageError, EventStore

    config = Config.load(args.config)
    answer, events = _run_simulation(config, _simulation_body(args))
    if events:
        store = EventStore(config.database_path)
        try:
            store.write(events)
        except EventStorageError as exc:
            print(f"warning: {len(events)} event(s) not stored: {exc}", file=sys.stderr)
        finally:
            store.close()
    if OUTPUT.json:
        show(answer)
        return 0
    policy = answer["policy"]
    if OUTPUT.quiet:
        print(policy.get("effective_decision"))
        return 0
    summary = {name: policy.get(name) for name in (
        "policy_id", "policy_revision", "decision", "effective_decision", "enforced",
        "rollout_mode", "reason_code", "triggered_categories", "denylist_hits",
        "allowlist_hits")}
    summary.update(fired_rules=answer["fired_rules"], upstream_called=answer["upstream_called"])
    # What a rewrite or summary adds to the request as a system instruction (when enforced:
    # `effective_decision` above says whether it would be).
    if answer["obligations"]["instruction"]:
        summary["instruction"] = answer["obligations"]["instruction"]
    print(render(summary))
    return 0
