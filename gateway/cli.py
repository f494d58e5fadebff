"""`python -m gateway ...`: serve, and manage accounts and keys. Output is JSON for scripts."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from gateway.config import Config, ConfigError
from gateway.identity import PLANS, IdentityError, IdentityStore


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ConfigError, IdentityError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH",
                        default=os.environ.get("GATEWAY_CONFIG") or None,
                        help="TOML configuration file (default: built-in defaults)")
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    commands = parser.add_subparsers(metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[common], help="run the gateway")
    serve.add_argument("--host", help="interface to bind (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default from config: 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default from config: 1)")
    serve.set_defaults(func=_serve)

    accounts = commands.add_parser("accounts", help="manage accounts").add_subparsers(
        metavar="ACTION")
    create = accounts.add_parser("create", parents=[common], help="create an account")
    create.add_argument("name")
    create.add_argument("--plan", required=True, choices=PLANS)
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
    return parser


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _store(args: argparse.Namespace) -> IdentityStore:
    from gateway.db import open_database

    return IdentityStore(open_database(Config.load(args.config).database_path))


def _accounts_create(args: argparse.Namespace) -> int:
    _print(asdict(_store(args).create_account(args.name, args.plan)))
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


def _serve(args: argparse.Namespace) -> int:
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.run import run

    from gateway.asgi import CONFIG_ENV

    config = Config.load(args.config)  # fail fast on a bad file, before any worker starts
    if args.config:
        os.environ[CONFIG_ENV] = os.path.abspath(args.config)
    workers = args.workers if args.workers is not None else config.workers
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    hyper = HypercornConfig()
    hyper.application_path = "gateway.asgi:app_from_env()"
    hyper.worker_class = "trio"
    hyper.bind = [f"{args.host or config.host}:{args.port or config.port}"]
    # One worker runs in this process; more are spawned processes sharing the socket.
    hyper.workers = 0 if workers == 1 else workers
    hyper.accesslog = None
    hyper.keep_alive_timeout = 75
    return run(hyper)
