"""`python -m gateway ...`: serve, and manage accounts, keys, projects and policies.

Output is text on stdout (`--json` for JSON, `-q` for only ids); errors are one line on stderr
with exit status 1 (policy check failures print the diagnostics in the compiler format
instead); usage errors exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from gateway.admin.history import add_event_commands
from gateway.cli.accounts import add_account_commands
from gateway.cli.output import add_output_options, configure_output
from gateway.cli.policies import add_policy_commands
from gateway.cli.projects import add_project_commands
from gateway.cli.setup_commands import add_serve_command, add_setup_commands
from gateway.cli.simulate import add_simulate_command
from gateway.cli.storage_commands import add_storage_commands, add_transfer_commands
from gateway.cli.usage import add_usage_command
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
    # The order here is the order `--help` lists the commands in.
    add_serve_command(commands, common)
    add_account_commands(commands, common)
    add_project_commands(commands, common)
    add_policy_commands(commands, common)
    add_simulate_command(commands, common)
    add_event_commands(commands, common)
    add_setup_commands(commands, common)
    add_storage_commands(commands, common)
    add_transfer_commands(commands, common)
    add_usage_command(commands, common)
    add_output_options(parser)
    return parser


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("policy-gateway")
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown"
