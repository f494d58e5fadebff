"""Inline policies (docs/governed-surface.md): a caller's own policy for one request, under a
budget.

Any key may send one, so compiling it is untrusted work. Before anything parses it, the source
is measured against caps from `[policies]` (bytes and lines of `.pol` text; bytes, list terms
and patterns of a JSON document); the compile itself runs on a worker thread (the event loop
never stalls), at most `inline_compile_threads` at a time, within `inline_compile_seconds`
(queueing included); afterwards rules, terms and patterns are counted on the parsed policy.
Compiled policies are cached by the SHA-256 of their content (LRU, bounded), so a client
sending the same inline policy on every request compiles it once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import trio

import dsl
from dsl import ast
from gateway.errors import InvalidPolicy
from gateway.policy.escalation import EscalationSettings, escalation_problem


@dataclass(frozen=True, slots=True)
class InlineBudget:
    """Caps on one inline policy (`[policies] inline_*` in the configuration)."""

    max_bytes: int = 64 * 1024
    max_lines: int = 2_000
    max_rules: int = 100
    max_terms: int = 2_000
    max_patterns: int = 20
    compile_seconds: float = 1.0
    compile_threads: int = 2
    #: False: `/v1` refuses a request carrying an inline policy (400 invalid_policy).
    on_v1: bool = True

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> InlineBudget:
        known = {f"inline_{name}" for name in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown [policies] key(s) {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for name in ("max_bytes", "max_lines", "max_rules", "max_terms", "max_patterns",
                     "compile_threads"):
            if f"inline_{name}" in data:
                values[name] = int(data[f"inline_{name}"])
                if values[name] < 1:
                    raise ValueError(f"policies.inline_{name} must be at least 1")
        if "inline_compile_seconds" in data:
            values["compile_seconds"] = float(data["inline_compile_seconds"])
            if not values["compile_seconds"] > 0:
                raise ValueError("policies.inline_compile_seconds must be positive")
        if "inline_on_v1" in data:
            if not isinstance(data["inline_on_v1"], bool):
                raise ValueError("policies.inline_on_v1 must be true or false")
            values["on_v1"] = data["inline_on_v1"]
        return cls(**values)


def _refuse(message: str) -> InvalidPolicy:
    return InvalidPolicy(f"The inline policy is invalid: {message}", param="policy")


def _json_strings(value: Any) -> Iterator[tuple[str | None, Any]]:
    """(key, item) of every list item of a JSON document, walked without recursion."""
    stack: list[tuple[str | None, Any]] = [(None, value)]
    while stack:
        key, item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.items())
        elif isinstance(item, list):
            for child in item:
                yield key, child
                stack.append((key, child))


class InlinePolicies:
    """Compiles inline policies within their budget; see the module docstring."""

    def __init__(self, budget: InlineBudget | None = None,
                 escalation: EscalationSettings | None = None, capacity: int = 256) -> None:
        self.budget = budget or InlineBudget()
        self.escalation = escalation or EscalationSettings()
        self._cache: OrderedDict[str, dsl.CompiledPolicy] = OrderedDict()
        self._capacity = capacity
        self._limiter = trio.CapacityLimiter(self.budget.compile_threads)

    async def compile(self, source: Any, *, surface: str = "policy") -> dsl.CompiledPolicy:
        if surface == "v1" and not self.budget.on_v1:
            raise InvalidPolicy("This gateway does not take inline policies on /v1; use "
                                "/policy/* with a project policy.", param="policy")
        raw = self._measure(source)
        key = hashlib.sha256(raw).hexdigest()
        policy = self._cache.get(key)
        if policy is not None:
            self._cache.move_to_end(key)
            return policy
        with trio.move_on_after(self.budget.compile_seconds) as budget:
            policy = await trio.to_thread.run_sync(_compile, source, limiter=self._limiter,
                                                   abandon_on_cancel=True)
        if budget.cancelled_caught or policy is None:
            raise _refuse(f"it did not compile within {self.budget.compile_seconds:g} s.")
        self._check_counts(policy)
        problem = escalation_problem(policy, self.escalation, inline=True)
        if problem is not None:
            raise _refuse(problem)
        self._cache[key] = policy
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return policy

    def _measure(self, source: Any) -> bytes:
        """The source's bytes, after the caps that need no parsing."""
        budget = self.budget
        if isinstance(source, str):
            raw = source.encode("utf-8", "surrogatepass")
            if len(raw) > budget.max_bytes:
                raise _refuse(f"it is {len(raw)} bytes; the limit is {budget.max_bytes}.")
            if source.count("\n") >= budget.max_lines:
                raise _refuse(f"it has more than {budget.max_lines} lines.")
            return raw
        if not isinstance(source, dict):
            raise InvalidPolicy("'policy' must be policy source text or a JSON policy document.",
                                param="policy")
        try:
            raw = orjson.dumps(source, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError as exc:  # nested deeper than orjson encodes
            raise _refuse(str(exc)) from None
        if len(raw) > budget.max_bytes:
            raise _refuse(f"it is {len(raw)} bytes; the limit is {budget.max_bytes}.")
        items = list(_json_strings(source))
        patterns = sum(1 for key, _ in items if key == "response_pattern")
        self._check(len(items) - patterns, patterns, rules=0)
        return raw

    def _check(self, terms: int, patterns: int, rules: int) -> None:
        budget = self.budget
        for what, count, cap in (("rules", rules, budget.max_rules),
                                 ("list terms", terms, budget.max_terms),
                                 ("patterns", patterns, budget.max_patterns)):
            if count > cap:
                raise _refuse(f"it has {count} {what}; the limit is {cap}.")

    def _check_counts(self, policy: dsl.CompiledPolicy) -> None:
        items = policy._ast.items  # the parsed policy, .pol or JSON alike
        rules = [i for i in items if isinstance(i, ast.Rule)]
        terms = sum(len(i.terms) for i in items if isinstance(i, ast.TermList))
        patterns = sum(1 for rule in rules for condition in rule.conditions
                       for node in _conditions(condition) if isinstance(node, ast.MatchesRegex))
        self._check(terms, patterns, len(rules))


def _conditions(condition: Any) -> Iterator[Any]:
    stack = [condition]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.Not):
            stack.append(node.operand)
        elif isinstance(node, ast.And | ast.Or):
            stack += [node.left, node.right]


def _compile(source: str | dict[str, Any]) -> dsl.CompiledPolicy:
    """On a worker thread: the compile, its failures turned into `InvalidPolicy`."""
    try:
        return dsl.compile_policy(source, filename="<inline policy>")
    except dsl.PolicyError as exc:
        text = source if isinstance(source, str) else ""
        rendered = "\n".join(d.render(text) if text else f"{d.message}" for d in
                             exc.diagnostics)
        raise InvalidPolicy(f"The inline policy is invalid:\n{rendered}",
                            param="policy") from None
    except (ValueError, TypeError, RecursionError, UnicodeError) as exc:
        raise _refuse(str(exc)) from None
