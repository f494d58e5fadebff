"""`python -m gateway accounts|keys ...`: create accounts, and create, list and revoke their
API keys (a key's plaintext is printed once, at creation)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from gateway.cli.output import show
from gateway.cli.storage_commands import shared_database
from gateway.config import Config
from gateway.errors import CommandError
from gateway.identity.keys import PLANS, IdentityStore


def add_account_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    accounts = commands.add_parser("accounts", help="manage accounts").add_subparsers(
        metavar="ACTION")
    create = accounts.add_parser("create", parents=[common], help="create an account")
    create.add_argument("name")
    create.add_argument("--plan", required=True, choices=PLANS)
    create.add_argument("--allow-duplicate-name", action="store_true",
                        help="create it even if an account of this name exists")
    create.set_defaults(func=_accounts_create)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(metavar="ACTION")
    key_create = keys.add_parser("create", parents=[common],
                                 help="create a key; prints the plaintext key once")
    key_create.add_argument("--account", required=True, metavar="ID")
    key_create.add_argument("--project", metavar="ID", help="bind the key to this project")
    key_create.add_argument("--label", default="", metavar="TEXT")
    key_create.set_defaults(func=_keys_create)
    key_list = keys.add_parser("list", parents=[common], help="list keys (previews only)")
    key_list.add_argument("--account", metavar="ID")
    key_list.set_defaults(func=_keys_list)
    key_revoke = keys.add_parser("revoke", parents=[common], help="revoke a key")
    key_revoke.add_argument("key_id", metavar="KEY_ID")
    key_revoke.set_defaults(func=_keys_revoke)


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
    show(asdict(store.create_account(args.name, args.plan)))
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    key, plaintext = _store(args).create_key(args.account, project_id=args.project,
                                             label=args.label)
    show({**asdict(key), "key": plaintext})
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    show([asdict(k) for k in _store(args).list_keys(args.account)])
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    show(asdict(_store(args).revoke_key(args.key_id)))
    return 0
