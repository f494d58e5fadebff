"""Where a chat completions answer holds the text the model wrote, for the output rules.

In a whole answer, each choice's `message`: `content`, `refusal`, `reasoning_content`, the
arguments (or custom input) of its `tool_calls` and of the legacy `function_call`. On a stream,
the same fields of each chunk's `delta`, each one a piece with the block it belongs to, so the
adapter can read, rewrite and split a chunk one piece at a time. Apart from
gateway/adapters/chat.py so that the adapter keeps the request side and the hooks, and these
readers of the answer's shape stand on their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.adapters.base import JSON, OutputDelta
from gateway.adapters.reading import TextFn, key_part

#: Delta fields holding text the model writes: the answer, a refusal, and (from providers that
#: stream it) reasoning.
_TEXT_FIELDS = ("content", "refusal", "reasoning_content")
PIECE_FIELDS = frozenset({*_TEXT_FIELDS, "tool_calls", "function_call"})
#: Where a piece sits in a delta: a text field's name, or ("tool_calls", position, "function" or
#: "custom"), or ("function_call",).
Where = str | tuple[Any, ...]


#: The block of the first choice's text (most chunks carry it).
FIRST_TEXT = (0, "content")


def only_content(delta: JSON) -> bool:
    """Whether the delta's only output is its `content` text."""
    if len(delta) == 1:
        return isinstance(delta.get("content"), str)
    return (isinstance(delta.get("content"), str) and delta.get("refusal") is None
            and delta.get("reasoning_content") is None and delta.get("tool_calls") is None
            and delta.get("function_call") is None)


def delta_pieces(choice_index: Any, delta: JSON) -> list[tuple[Where, OutputDelta]]:
    """The output texts of one choice's delta, each with its block."""
    found: list[tuple[Where, OutputDelta]] = []
    for name in _TEXT_FIELDS:
        text = delta.get(name)
        if isinstance(text, str) and (text or name == "content"):
            found.append((name, OutputDelta(text, (choice_index, name))))
    calls = delta.get("tool_calls")
    if isinstance(calls, list):
        for position, call in enumerate(calls):
            if not isinstance(call, dict):
                continue
            for kind, key in (("function", "arguments"), ("custom", "input")):
                inner = call.get(kind)
                if isinstance(inner, dict) and isinstance(inner.get(key), str):
                    block = (choice_index, "tool", key_part(call.get("index", position)))
                    found.append((("tool_calls", position, kind),
                                  OutputDelta(inner[key], block, held=True)))
    legacy = delta.get("function_call")
    if isinstance(legacy, dict) and isinstance(legacy.get("arguments"), str):
        found.append((("function_call",),
                      OutputDelta(legacy["arguments"], (choice_index, "function_call"), True)))
    return found


def with_piece(delta: JSON, where: Where, text: str) -> JSON:
    if isinstance(where, str):
        return {**delta, where: text}
    if where[0] == "function_call":
        return {**delta, "function_call": {**delta["function_call"], "arguments": text}}
    _, position, kind = where
    key = "arguments" if kind == "function" else "input"
    calls = list(delta["tool_calls"])
    call = calls[position]
    calls[position] = {**call, kind: {**call[kind], key: text}}
    return {**delta, "tool_calls": calls}


def only_piece(delta: JSON, where: Where) -> JSON:
    """The fields of `delta` that carry the piece at `where`, and nothing of the others."""
    if isinstance(where, str):
        return {where: delta[where]}
    if where[0] == "function_call":
        return {"function_call": delta["function_call"]}
    return {"tool_calls": [delta["tool_calls"][where[1]]]}


def map_answer(message: JSON, fn: TextFn) -> JSON:
    """An answer message with `fn` applied to its content, refusal and tool-call arguments."""
    mapped = dict(message)
    for name in _TEXT_FIELDS:
        if isinstance(message.get(name), str):
            mapped[name] = fn(message[name])
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        mapped["tool_calls"] = [_map_call(call, fn) for call in calls]
    legacy = message.get("function_call")
    if isinstance(legacy, dict) and isinstance(legacy.get("arguments"), str):
        mapped["function_call"] = {**legacy, "arguments": fn(legacy["arguments"])}
    return mapped


def _map_call(call: Any, fn: TextFn) -> Any:
    if not isinstance(call, dict):
        return call
    for kind, key in (("function", "arguments"), ("custom", "input")):
        inner = call.get(kind)
        if isinstance(inner, dict) and isinstance(inner.get(key), str):
            return {**call, kind: {**inner, key: fn(inner[key])}}
    return call


def first_delta(payload: Mapping[str, Any]) -> JSON | None:
    choices = payload.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        delta = choices[0].get("delta")
        if isinstance(delta, dict):
            return delta
    return None
