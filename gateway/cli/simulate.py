"""`python -m gateway simulate`: the decision a project's policy takes on a request, on the
gateway's own decision path, without the upstream and without a running gateway."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import trio

from gateway.admin.registry import (
    list_revisions,
)
from gateway.cli.output import OUTPUT, render, show
from gateway.cli.policies import database, escalation_settings, load_registry
from gateway.config import Config
from gateway.errors import CommandError, ProjectError
from gateway.identity.projects import ProjectStore
from gateway.policy.prepared import SIMULATED_SURFACES

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
    simulate.add_argument("--surface", choices=sorted(SIMULATED_SURFACES),
                          default="chat.completions")
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
    from gateway.identity.credentials import resolve_project
    from gateway.identity.keys import Caller, IdentityCache, load_snapshot
    from gateway.moderation import ModerationSettings, Moderator
    from gateway.policy.governance import GatewayFields
    from gateway.policy.inline import InlineBudget, InlinePolicies
    from gateway.policy.prepared import prepare_request, simulate_moderated, simulated_adapter
    from gateway.policy.rollouts import Rollouts

    db = database(config)
    events: list[Any] = []
    try:
        registry = load_registry(config, db)
        directory = (IdentityCache(db) if config.postgres is None
                     else IdentityCache.of_snapshot(load_snapshot(db)))
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
        escalation = escalation_settings(config)
        inline = InlinePolicies(InlineBudget.from_mapping(config.inline_policy), escalation)
        adapter = simulated_adapter({}, body)
        # The configured classifier, as the server asks it (an external one over the network).
        moderator = Moderator(ModerationSettings.from_mapping(config.moderation), os.environ)

        async def run() -> tuple[dict[str, Any], dict[str, Any]]:
            try:
                # An inline policy in the body compiles as the server compiles it (on a thread).
                request = await prepare_request(adapter, {}, body, caller, resolve,
                                                inline.compile)
                return await simulate_moderated(
                    adapter, caller, request, rollouts.preview,
                    config.always_blocked_categories, escalation.shown, moderator)
            finally:
                await moderator.aclose()

        answer, event = trio.run(run)
        events.append(event)
    finally:
        if config.postgres is None:
            db.conn.close()
    return answer, events


def _simulate(args: argparse.Namespace) -> int:
    from gateway.errors import EventStorageError
    from gateway.events.pg_store import command_event_store

    config = Config.load(args.config)
    answer, events = _run_simulation(config, _simulation_body(args))
    if events:
        store = command_event_store(config)
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
