"""Which strings of a request body are text the model reads: all of them, except an explicit list.

Every adapter describes its API's request with a `TextInventory`: the strings a policy reads are
every string in the body (content of every kind, names, tool calls and their arguments, tool
results, tool and schema descriptions, documents, thinking, prediction...), except those on the
inventory's exclusion list, each with the reason it is not text the model reads (ids, the model
name, enums, signatures, inline binary data, credentials). Reading by exclusion means a field an
API adds tomorrow is policy input the day it appears, not after someone notices it.

Exclusions are written in two forms:
- ``"a.b.c"``: the field at that path from the body's top (list levels are transparent, so
  ``messages.content.text`` is ``messages[i].content[j].text``); a path may end at an object or
  list, which excludes everything in it;
- ``"*.key"``: the key at any depth (outside free-form JSON, below).

Either may end in ``@kind1|kind2``: it then applies only where the object holding the key has
that ``type`` (``*.data@base64`` is base64 bytes, while a text document's ``data`` is text).

Free-form JSON (tool call inputs, JSON schemas) is listed separately: no exclusion applies
inside it, every string value in it is read (its keys are not: they are property names).

`texts` and `map_texts` walk a body with the same rules, so what a policy reads and what
redaction rewrites are the same set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.errors import InvalidRequest

TextFn = Callable[[str], str]
#: Called for a string the inventory leaves out: (the string, why).
SkipFn = Callable[[str, str], None]


@dataclass(slots=True)
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    #: (kinds or None for any, reason): the field at this node is excluded.
    excluded: list[tuple[frozenset[str] | None, str]] = field(default_factory=list)
    free: bool = False
    #: Per key with any rule here: the reason it is left out, None when it is read, or
    #: `_DEPENDS` when that depends on the object's `type` (filled in by `TextInventory`).
    decided: dict[str, str | None] = field(default_factory=dict)

    def child(self, key: str) -> _Node:
        node = self.children.get(key)
        if node is None:
            node = self.children[key] = _Node()
        return node

    def reason(self, kind: Any) -> str | None:
        for kinds, reason in self.excluded:
            if kinds is None or kind in kinds:
                return reason
        return None


_CONTAINERS = (list, dict)
#: Deeper than this, a body is refused rather than read partly (or by a recursion error).
MAX_DEPTH = 200

_FREE = _Node(free=True)
_DEPENDS = "\0depends on type"


def _split(pattern: str) -> tuple[list[str], frozenset[str] | None]:
    path, _, kinds = pattern.partition("@")
    return path.split("."), frozenset(kinds.split("|")) if kinds else None


class TextInventory:
    def __init__(self, exclusions: Mapping[str, str], free_form: Iterable[str] = ()) -> None:
        #: The exclusion list as written, pattern -> reason (documentation and tests read it).
        self.exclusions = dict(exclusions)
        self.free_form = tuple(free_form)
        self._root = _Node()
        self._anywhere: dict[str, list[tuple[frozenset[str] | None, str]]] = {}
        for pattern, reason in self.exclusions.items():
            keys, kinds = _split(pattern)
            if keys[0] == "*":
                if len(keys) != 2:
                    raise ValueError(f"'*.' exclusions name one key: {pattern!r}")
                self._anywhere.setdefault(keys[1], []).append((kinds, reason))
                continue
            node = self._root
            for key in keys:
                node = node.child(key)
            node.excluded.append((kinds, reason))
        for pattern in self.free_form:
            node = self._root
            for key in pattern.split("."):
                node = node.child(key)
            node.free = True
        #: Below a key without rules only the `*.` rules apply.
        self._empty = _Node()
        self._decide(self._root)
        self._decide(self._empty)

    def _decide(self, node: _Node) -> None:
        """Fill in `node.decided` (and its children's), so that the walk decides most keys with
        one lookup."""
        for key in {*node.children, *self._anywhere}:
            child = node.children.get(key)
            if child is not None and child.free:
                node.decided[key] = None
            elif child is not None and any(kinds is not None for kinds, _ in child.excluded):
                node.decided[key] = _DEPENDS
            elif child is not None and child.excluded:
                node.decided[key] = child.excluded[0][1]
            elif any(kinds is not None for kinds, _ in self._anywhere.get(key, ())):
                node.decided[key] = _DEPENDS
            else:
                node.decided[key] = next((r for _, r in self._anywhere.get(key, ())), None)
        for child in node.children.values():
            self._decide(child)

    def node(self, *path: str) -> _Node:
        """The rules below `path` (for walking one part of a body, e.g. one message)."""
        node = self._root
        for key in path:
            node = node.children.get(key) or self._empty
        return node

    # --- reading --------------------------------------------------------------------------

    def texts(self, value: Any, node: _Node | None = None, *, skip_keys: frozenset[str] = frozenset(),
              on_skip: SkipFn | None = None) -> list[str]:
        """Every string of `value` a policy reads, in document order. `skip_keys` are top-level
        keys of `value` the caller reads itself (in its own order). `on_skip` hears of every
        string left out, with the reason (for tests and explanations; slower)."""
        if skip_keys and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in skip_keys}
        out: list[str] = []
        if on_skip is not None:
            self._explain(value, node or self._root, out, on_skip, 0)
        elif isinstance(value, str):
            out.append(value)
        else:
            self._collect(value, node or self._root, out, 0)
        return out

    def _collect(self, value: Any, node: _Node, out: list[str], depth: int) -> None:
        """`texts` on the hot path (every governed request): strings are taken where they are
        found instead of one call each."""
        if depth > MAX_DEPTH:
            _too_deep()
        if isinstance(value, list):
            for item in value:
                if isinstance(item, str):
                    out.append(item)
                elif isinstance(item, _CONTAINERS):
                    self._collect(item, node, out, depth + 1)
            return
        if not isinstance(value, dict):
            return
        if node.free:
            self._collect(list(value.values()), node, out, depth + 1)
            return
        kind = _kind(value)
        decided, children, empty = node.decided, node.children, self._empty
        for key, item in value.items():
            if isinstance(item, str):
                reason = decided.get(key)
                if reason is None or (reason is _DEPENDS
                                      and self._step(node, key, kind)[1] is None):
                    out.append(item)
            elif isinstance(item, _CONTAINERS):
                reason = decided.get(key)
                if reason is _DEPENDS:
                    child, reason = self._step(node, key, kind)
                else:
                    child = children.get(key) or empty
                if reason is None:
                    self._collect(item, child, out, depth + 1)

    def _explain(self, value: Any, node: _Node, out: list[str], on_skip: SkipFn,
                 depth: int) -> None:
        if isinstance(value, str):
            out.append(value)
            return
        if depth > MAX_DEPTH:
            _too_deep()
        if isinstance(value, list):
            for item in value:
                self._explain(item, node, out, on_skip, depth + 1)
        elif isinstance(value, dict):
            kind = _kind(value)
            for key, item in value.items():
                child, reason = (_FREE, None) if node.free else self._step(node, key, kind)
                if reason is None:
                    self._explain(item, child, out, on_skip, depth + 1)
                else:
                    for text in self.texts(item, _FREE):
                        on_skip(text, reason)

    def _step(self, node: _Node, key: str, kind: Any) -> tuple[_Node, str | None]:
        child = node.children.get(key)
        if child is not None:
            reason = child.reason(kind) if child.excluded else None
            if reason is not None or child.free:
                return child, reason
        anywhere = self._anywhere.get(key)
        if anywhere is not None:
            for kinds, reason in anywhere:
                if kinds is None or kind in kinds:
                    return self._empty, reason
        return child or self._empty, None

    # --- rewriting ------------------------------------------------------------------------

    def map_texts(self, value: Any, fn: TextFn, node: _Node | None = None) -> Any:
        """A copy of `value` with `fn` applied to every string `texts` reads (objects and lists
        are copied)."""
        return self._map(value, node or self._root, fn, 0)

    def _map(self, value: Any, node: _Node, fn: TextFn, depth: int) -> Any:
        if isinstance(value, str):
            return fn(value)
        if depth > MAX_DEPTH:
            _too_deep()
        if isinstance(value, list):
            return [self._map(item, node, fn, depth + 1) for item in value]
        if not isinstance(value, dict):
            return value
        if node.free:
            return {key: self._map(item, _FREE, fn, depth + 1) for key, item in value.items()}
        kind = _kind(value)
        mapped = {}
        for key, item in value.items():
            child, reason = self._step(node, key, kind)
            mapped[key] = item if reason is not None else self._map(item, child, fn, depth + 1)
        return mapped


def _kind(value: dict[str, Any]) -> str | None:
    """The object's `type`, when it is a string (a client may send any JSON value there)."""
    kind = value.get("type")
    return kind if isinstance(kind, str) else None


def _too_deep() -> None:
    raise InvalidRequest(f"The request body nests objects and arrays more than {MAX_DEPTH} "
                         f"levels deep.")


def unescaped_json_text(text: str) -> str | None:
    """The string values of `text` as decoded JSON, joined by newlines, when `text` is JSON that
    spells some of them with escapes (`\\u0061gent`), so a term cannot hide behind escapes in
    tool-call arguments; None otherwise (the common case costs one substring search)."""
    if "\\" not in text:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    strings: list[str] = []
    _strings_of(value, strings, 0)
    decoded = "\n".join(strings)
    return decoded if decoded and decoded not in text else None


def _strings_of(value: Any, out: list[str], depth: int) -> None:
    if isinstance(value, str):
        out.append(value)
    elif depth < MAX_DEPTH and isinstance(value, list | dict):
        for item in value.values() if isinstance(value, dict) else value:
            _strings_of(item, out, depth + 1)
