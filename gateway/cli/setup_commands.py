"""The commands of `python -m gateway` about running the gateway and its own set-up: `serve`,
`check-config`, `config-schema` and `admin-token`, and the admin token `serve` generates on the
first start."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from gateway.config import Config
from gateway.config.schema import json_schema
from gateway.datadir import (
    admin_token_path,
    ensure_admin_token,
    read_admin_token,
    readable_by_others,
)
from gateway.errors import ConfigError


def add_serve_command(commands: Any, common: argparse.ArgumentParser) -> None:
    serve = commands.add_parser("serve", parents=[common], help="run the gateway")
    serve.add_argument("--host", help="interface to bind (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default from config: 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default from config: 1)")
    serve.add_argument("--shutdown-grace", type=float, metavar="SECONDS",
                       help="time in-flight requests get after SIGTERM/SIGINT before streams "
                            "are ended (default from config: 20)")
    serve.set_defaults(func=_serve)


def add_setup_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    check = commands.add_parser(
        "check-config", help="check a configuration file (and the environment) without "
                             "starting anything")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=_check_config)
    schema = commands.add_parser(
        "config-schema", help="print the JSON Schema of the configuration file (for editors)")
    schema.set_defaults(func=_config_schema)
    token = commands.add_parser(
        "admin-token", parents=[common],
        help="print the admin token of the management API that `serve` generated")
    token.set_defaults(func=_admin_token)


def _check_config(args: argparse.Namespace) -> int:
    config = Config.load(args.file)  # ConfigError: printed by main() with every problem
    providers = ", ".join(f"{p.name} ({p.kind}{', echo' if p.is_echo else ''})"
                          for p in config.providers.values())
    print(f"{args.file}: valid")
    print(f"  database   {config.database_path}")
    if config.postgres is not None:
        print(f"  postgres   {config.postgres.where} (identity and policies)")
    print(f"  policies   {config.policies_dir}")
    print(f"  providers  {providers}")
    for route in config.routes:
        print(f"  route      {route.model} -> {route.provider}")
    return 0


def _config_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return 0


def _admin_token(args: argparse.Namespace) -> int:
    config = Config.load(args.config)
    if config.admin_token:
        print("The configuration sets the admin token ([admin] token or the variable named "
              "by [admin] token_env); it is not printed here.", file=sys.stderr)
        return 1
    token = read_admin_token(config)
    if token is None:
        print(f"No admin token yet: `python -m gateway serve` generates one on its first start "
              f"and keeps it in {admin_token_path(config)}.", file=sys.stderr)
        return 1
    print(token)
    return 0


def admin_token_for_serving(config: Config) -> tuple[Config, list[str]]:
    """`config` with its admin token: the configured one, else the generated one (made now on
    the first start), and the notice that announces a new one once."""
    if config.admin_token:
        return config, []
    if not config.generate_admin_token:
        return config, ["no admin token: [admin] generate_token is false, so only JWT users "
                        "with the admin role can use the management API"]
    token, created = ensure_admin_token(config)
    where = admin_token_path(config)
    if created:
        notice = (f"generated the management API's admin token (shown once): {token}; it is "
                  f"kept in {where} (owner-only), and `python -m gateway admin-token` prints it "
                  "again")
    else:
        notice = (f"the management API's admin token is the one generated in {where}; "
                  "`python -m gateway admin-token` prints it")
    notices = [notice]
    if readable_by_others(where):
        notices.append(f"{where} is readable by other users: `chmod 600 {where}`, or set "
                       "[admin] token_env for production")
    return config.with_overrides(admin_token=token), notices


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
