"""The strings of a decoded JSON value, read and rewritten for output and argument rules. Pure
functions, walked without recursion: a value may come from a hostile client or server, nested
as deep as the JSON decoder allows.

Object keys are text too: a map keyed by e-mail addresses or phone numbers holds them in its
keys, so a redaction rewrites keys as it rewrites values. Two keys that a redaction makes equal
stay distinct (the later one gets a ` (2)`, ` (3)`... suffix), so no entry is lost. Each object
remembers the next suffix to try for each key that collided, so a hostile map of a million keys
that all redact to one text costs a million probes, not half a million squared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

#: Nesting a governed message may have. orjson decodes 1024 levels but encodes only 254, and the
#: gateway wraps what it relays (a `policy` object, an error) a few levels deeper.
MAX_JSON_DEPTH = 200


def json_depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value (a scalar is 0, `[]` and `{}` are 1)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in
                         (item.values() if isinstance(item, dict) else item))
    return deepest


def map_strings(value: Any, rewrite: Callable[[str], str], skip: frozenset[str] = frozenset(),
                *, keys: bool = True, fixed_levels: int = 0) -> Any:
    """`value` (any JSON) with every string rewritten in document order, object keys included
    (unless `keys` is false), except the values under the keys in `skip` and those keys. The
    keys of the outermost `fixed_levels` levels are field names of the protocol's (an error's
    `message` and `data`) and stay as they are; only those below are the sender's text."""
    if not isinstance(value, dict | list):
        return rewrite(value) if isinstance(value, str) else value
    root: Any = {} if isinstance(value, dict) else []
    # Depth first with one iterator per open container: the order a recursive walk would take.
    stack: list[tuple[Iterator[tuple[Any, Any]], Any]] = [(_entries(value), root)]
    # (id of an object being built, a key that collided in it) -> the next suffix to try: the
    # objects live in `root` until the walk ends, so their ids stay theirs.
    suffixes: dict[tuple[int, str], int] = {}
    while stack:
        entries, target = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        key, item = entry
        if key in skip:
            target[_distinct(target, key, suffixes)] = item
            continue
        if isinstance(target, dict):  # the key before its value: the order of the text
            rewritten = keys and len(stack) > fixed_levels
            key = _distinct(target, rewrite(key) if rewritten else key, suffixes)
        if isinstance(item, str):
            item = rewrite(item)
        elif isinstance(item, dict | list):
            copy: Any = {} if isinstance(item, dict) else []
            stack.append((_entries(item), copy))
            item = copy
        if isinstance(target, list):
            target.append(item)
        else:
            target[key] = item
    return root


def _entries(container: dict[str, Any] | list[Any]) -> Iterator[tuple[Any, Any]]:
    """(key, value) of an object's entries, (None, item) of a list's."""
    if isinstance(container, dict):
        return iter(container.items())
    return ((None, item) for item in container)


def _distinct(target: dict[str, Any], key: str, suffixes: dict[tuple[int, str], int]) -> str:
    """`key`, or `key (N)` for the first N, from the last one `key` took in `target`, that no
    entry of `target` has yet. Each N is tried at most once per key: the probes of a whole
    object are at most its entries plus its collisions."""
    if key not in target:
        return key
    slot = (id(target), key)
    number = suffixes.get(slot, 2)
    while (candidate := f"{key} ({number})") in target:
        number += 1
    suffixes[slot] = number + 1
    return candidate


def strings_found(value: Any, skip: frozenset[str] = frozenset(), *, keys: bool = False,
                  fixed_levels: int = 0) -> list[str]:
    """Every string value in `value` (any JSON), and its object keys when `keys` is true (below
    the outermost `fixed_levels` levels), except under (and of) the keys in `skip`: what
    `map_strings` rewrites with the same arguments."""
    found: list[str] = []

    def note(text: str) -> str:
        found.append(text)
        return text

    map_strings(value, note, skip, keys=keys, fixed_levels=fixed_levels)
    return found
