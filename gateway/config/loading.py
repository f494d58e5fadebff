"""Reading the configuration: the TOML file, the environment overrides, and the schema check.

The environment follows one rule: `GATEWAY_<SECTION>_<KEY>` sets `[section] key` and wins over
the file, for the single-value keys of the sections in `OVERRIDABLE` (for example
`GATEWAY_SERVER_PORT=9000`, `GATEWAY_DATABASE_PATH=/var/lib/gateway/gateway.db`). A value is
read as a TOML value when it is one (`9000`, `true`, `["a", "b"]`) and as text otherwise; text
keys always take the text as it is. `GATEWAY_DATABASE` and `GATEWAY_POLICIES` are older names of
`GATEWAY_DATABASE_PATH` and `GATEWAY_POLICIES_DIRECTORY`. Secrets are not overridden this way:
the file names the variable that holds each one (`api_key_env`, `token_env`, `secret_env`).
"""

from __future__ import annotations

import difflib
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from gateway.config.schema import SECTIONS, ConfigFile, Section
from gateway.errors import ConfigError

#: Sections whose single-value keys `GATEWAY_<SECTION>_<KEY>` overrides.
OVERRIDABLE = ("server", "database", "policies", "limits", "timeouts", "moderation", "events",
               "quotas")
#: Older variable names, kept working: the same as the variable they name.
ALIASES = {"GATEWAY_DATABASE": "GATEWAY_DATABASE_PATH",
           "GATEWAY_POLICIES": "GATEWAY_POLICIES_DIRECTORY"}




def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc}") from exc


def override_variables() -> dict[str, tuple[str, str]]:
    """Variable name -> (section, key) for every key the environment may override."""
    names: dict[str, tuple[str, str]] = {}
    for section in OVERRIDABLE:
        model = SECTIONS[section]
        for key, info in model.model_fields.items():
            if _is_single_value(info.annotation):
                names[f"GATEWAY_{section}_{key}".upper()] = (section, key)
    return names


def apply_environment(data: Mapping[str, Any], env: Mapping[str, str]
                      ) -> tuple[dict[str, Any], dict[str, str]]:
    """`data` with the environment's overrides applied (see the module docstring), and the
    variable each overridden key came from (`server.port` -> `GATEWAY_SERVER_PORT`)."""
    merged = {name: dict(value) if isinstance(value, Mapping) else value
              for name, value in data.items()}
    variables = override_variables()
    origins: dict[str, str] = {}
    for variable, (section, key) in variables.items():
        given = next((name for name in (variable, *_aliases_of(variable)) if name in env), None)
        if given is None:
            continue
        origins[f"{section}.{key}"] = given
        table = merged.setdefault(section, {})
        if not isinstance(table, dict):
            continue  # the schema check reports the section itself
        annotation = SECTIONS[section].model_fields[key].annotation
        table[key] = _env_value(env[given], text=annotation in (str, str | None))
    return merged, origins


def validate(data: Mapping[str, Any], origins: Mapping[str, str] | None = None) -> Section:
    """The checked file; ConfigError listing every problem with its key's full path (and the
    variable it came from, for a key the environment set)."""
    try:
        return ConfigFile.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            problem = _describe(error)
            variable = (origins or {}).get(_path(_user_loc(error["loc"])))
            problems.append(f"{problem} (set by {variable})" if variable else problem)
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None


def _aliases_of(variable: str) -> list[str]:
    return [old for old, new in ALIASES.items() if new == variable]


def _env_value(raw: str, *, text: bool) -> Any:
    if text:
        return raw
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        return raw


def _is_single_value(annotation: Any) -> bool:
    return not any(isinstance(arg, type) and issubclass(arg, BaseModel | dict)
                   for arg in _flatten(annotation))


def _flatten(annotation: Any) -> list[Any]:
    """`annotation` and every type inside it (unions, containers, Annotated)."""
    found = [typing.get_origin(annotation) or annotation]
    for arg in typing.get_args(annotation):
        found += _flatten(arg)
    return found


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(error: Any) -> str:
    loc = _user_loc(error["loc"])
    where = _path(loc) or "the file"
    kind = error["type"]
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        what = "section" if len(loc) == 1 else "key"
        hint = f"; did you mean {_path((*loc[:-1], close[0]))!r}?" if close else \
            (f"; known: {', '.join(sorted(known))}" if known else "")
        return f"{where}: unknown {what}{hint}"
    if kind == "missing":
        return f"{where}: required"
    got = error.get("input")
    shown = repr(got)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{where}: {error['msg']} (got {type(got).__name__} {shown})"


def _user_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """`loc` as the file spells it: without the names pydantic gives the members of a union it
    tried (`jwt.issuer.list[str]`). Table keys, which users choose, are always kept."""
    kept: list[int | str] = []
    annotation: Any = ConfigFile
    member_tag_next = False
    for part in loc:
        if member_tag_next:
            member_tag_next = False
            annotation = None  # inside a union member: no union below in this schema
            continue
        kept.append(part)
        child = _child_annotation(annotation, part) if annotation is not None else None
        member_tag_next = _is_union(child)
        annotation = _member_model(child)
    return tuple(kept)


def _is_union(annotation: Any) -> bool:
    """A union of several types (not just an optional one): pydantic tags its errors."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return False
    return len([a for a in typing.get_args(annotation) if a is not type(None)]) > 1


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the table at `loc` accepts."""
    model: Any = ConfigFile
    for part in loc:
        model = _member_model(_child_annotation(model, part))
        if model is None:
            return []
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) \
        else []


def _child_annotation(model: Any, part: int | str) -> Any:
    if isinstance(model, type) and issubclass(model, BaseModel):
        info = model.model_fields.get(str(part))
        return info.annotation if info else None
    args = typing.get_args(model)
    return args[-1] if args else None  # list[X] / dict[str, X]: the item type


def _member_model(annotation: Any) -> Any:
    """The model (or container) inside an optional / union annotation."""
    if annotation is None:
        return None
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                return _member_model(arg)
    return annotation
