"""The output options every command shares: human-readable text by default, `--json` for JSON,
`-q` for only the id or the key; and `CommandError`, a command's refusal."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.cli.text import escape_controls

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
    return escape_controls(str(value))  # labels come from callers: never raw on a terminal


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
        blocks = [f"{k}:\n{escape_controls(v.rstrip(), keep_newlines=True)}"
                  for k, v in value.items()
                  if isinstance(v, str) and "\n" in v]
        width = max((len(k) for k in fields), default=0)
        lines = [f"{k.ljust(width)}  {_cell(v)}" for k, v in fields.items()]
        return "\n".join(lines + blocks)
    return _cell(value)
