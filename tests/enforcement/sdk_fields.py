"""Every string-typed field of a request, read from the official SDKs' request TypedDicts.

`string_fields(params_type)` walks the TypedDict recursively through unions, lists, iterables,
dicts and nested TypedDicts, and lists one `Field` per place a free string can go: its path
(`messages[].content[].text`), and the steps to build a body that puts a string there (the
union member chosen at each level, so the body names the right `type`/`role`). `Literal` strings
are enums, not text, and are not listed (they are written into bodies as discriminators).
"""

from __future__ import annotations

import collections.abc
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

import typing_extensions
from typing_extensions import is_typeddict

#: How deep a path may go: the SDK types are recursive (JSON schema, nested items).
MAX_DEPTH = 9


@dataclass(frozen=True)
class Field:
    path: str
    #: One (TypedDict, key) per object level, from the root; a `None` key is a list item.
    steps: tuple[tuple[Any, str | None], ...]
    #: "str" for a string field, "json" for a free-form JSON value (`object`, `Dict[str, object]`).
    kind: str


def _strip(tp: Any) -> Any:
    """The type without `Required`/`NotRequired`/`Annotated`/`Optional` wrappers."""
    while True:
        origin = get_origin(tp)
        if origin in _WRAPPERS:
            tp = get_args(tp)[0]
            continue
        return tp


def _members(tp: Any) -> list[Any]:
    tp = _strip(tp)
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return [m for arg in get_args(tp) for m in _members(arg)]
    return [tp]


_WRAPPERS = (typing.Required, typing.NotRequired, typing.Annotated, typing_extensions.Required,
             typing_extensions.NotRequired, typing_extensions.Annotated,
             typing_extensions.ReadOnly)
_SEQUENCES = (list, collections.abc.Iterable, collections.abc.Sequence, list,
              typing.Iterable, typing.Sequence, tuple)


def string_fields(root: Any) -> list[Field]:
    found: dict[str, Field] = {}
    _walk(root, "", (), found, depth=0, seen=())
    return sorted(found.values(), key=lambda f: f.path)


def discriminators(typed_dict: Any) -> dict[str, str]:
    """The `type` and `role` a body must name to be this union member (first literal)."""
    hints = typing.get_type_hints(typed_dict)
    out = {}
    for key in ("type", "role"):
        hint = _strip(hints[key]) if key in hints else None
        if hint is not None and get_origin(hint) is Literal:
            out[key] = get_args(hint)[0]
    return out


def build(field: Field, leaf: Any) -> Any:
    """A value that holds `leaf` at `field` (naming every union member on the way)."""
    value = leaf
    for typed_dict, key in reversed(field.steps):
        if typed_dict is None:
            value = [value]
        elif typed_dict is dict:
            value = {"k": value}
        else:
            value = {**discriminators(typed_dict), key: value}
    return value


def _walk(tp: Any, path: str, steps: tuple[tuple[Any, str | None], ...],
          found: dict[str, Field], depth: int, seen: tuple[Any, ...]) -> None:
    if depth > MAX_DEPTH:
        return
    for member in _members(tp):
        origin = get_origin(member)
        if member is str:
            found.setdefault(path, Field(path, steps, "str"))
        elif member is object or (origin in (dict, collections.abc.Mapping, dict)
                                  and get_args(member)[1:] in ((object,), (Any,))):
            found.setdefault(path, Field(path, steps, "json"))
        elif origin is Literal or member in (int, float, bool, type(None), bytes):
            continue
        elif is_typeddict(member):
            if member in seen:
                continue
            hints = typing.get_type_hints(member, include_extras=True)
            kind = discriminators(member)
            label = f"<{kind.get('type') or kind.get('role')}>" if kind else ""
            for key, hint in hints.items():
                if key in kind:
                    continue
                sub = f"{path}{label}.{key}" if path else key
                _walk(hint, sub, (*steps, (member, key)), found, depth + 1, (*seen, member))
        elif origin in _SEQUENCES or member in (list,):
            for arg in get_args(member)[:1]:
                _walk(arg, path + "[]", (*steps, (None, None)), found, depth + 1, seen)
        elif origin in (dict, collections.abc.Mapping, dict):
            args = get_args(member)
            if args:
                _walk(args[1], path + "{}", (*steps, (dict, None)), found, depth + 1, seen)


def sdk_params() -> dict[str, Any]:
    """The request parameter TypedDict of each API, from the installed SDKs."""
    from anthropic.types import message_create_params
    from openai.types.chat import completion_create_params
    from openai.types.responses import response_create_params

    return {"chat": completion_create_params.CompletionCreateParamsBase,
            "messages": message_create_params.MessageCreateParamsBase,
            "responses": response_create_params.ResponseCreateParamsBase}


def reviewed_listing() -> str:
    """The listing kept in `sdk_fields.txt`: the SDK versions, then one `api path` per line."""
    import importlib.metadata

    versions = " ".join(f"{name}=={importlib.metadata.version(name)}"
                        for name in ("openai", "anthropic"))
    lines = ["# The string fields of the SDKs' request types the input inventories were reviewed",
             f"# against: {versions}. Regenerate after a review with:",
             "#   python -m tests.enforcement.sdk_fields > tests/enforcement/sdk_fields.txt"]
    lines += [f"{api} {field.path}" for api, params in sdk_params().items()
              for field in string_fields(params)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reviewed_listing(), end="")
