"""Where a Responses answer holds the text the model wrote, for the output rules.

In a whole answer, the `output` items: the text and refusal parts of messages, reasoning
summaries and texts, and the arguments, input or code of tool-call items. On a stream, the
delta events that carry those texts block by block (`DELTA_EVENTS`), and the "done" events and
output items that repeat a whole block (`DONE_FIELDS`, `released_item`), which after output
redaction must carry the text the client actually got. Apart from
gateway/adapters/responses.py so that the adapter keeps the request side and the hooks, and
these tables of the answer's shape stand on their own.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from gateway.adapters.base import JSON
from gateway.adapters.reading import TextFn, key_part

#: Delta events of text the model writes: (block kind, the field that numbers the block within
#: its output item, held until the block ends). Tool-call arguments are held.
DELTA_EVENTS: dict[str, tuple[str, str, bool]] = {
    "response.output_text.delta": ("text", "content_index", False),
    "response.refusal.delta": ("text", "content_index", False),
    "response.function_call_arguments.delta": ("args", "item_id", True),
    "response.custom_tool_call_input.delta": ("args", "item_id", True),
    "response.mcp_call_arguments.delta": ("args", "item_id", True),
    "response.code_interpreter_call_code.delta": ("args", "item_id", True),
    "response.reasoning_summary_text.delta": ("summary", "summary_index", False),
    "response.reasoning_text.delta": ("reasoning", "content_index", False),
}
#: Events that repeat one whole block: (block kind, numbering field, the field with the text).
DONE_FIELDS: dict[str, tuple[str, str, str]] = {
    "response.output_text.done": ("text", "content_index", "text"),
    "response.refusal.done": ("text", "content_index", "refusal"),
    "response.function_call_arguments.done": ("args", "item_id", "arguments"),
    "response.custom_tool_call_input.done": ("args", "item_id", "input"),
    "response.mcp_call_arguments.done": ("args", "item_id", "arguments"),
    "response.code_interpreter_call_code.done": ("args", "item_id", "code"),
    "response.reasoning_summary_text.done": ("summary", "summary_index", "text"),
    "response.reasoning_text.done": ("reasoning", "content_index", "text"),
}
#: Output items holding a tool call's arguments (or code), and the field.
_CALL_FIELDS = {"function_call": "arguments", "custom_tool_call": "input",
                "mcp_call": "arguments", "mcp_approval_request": "arguments",
                "code_interpreter_call": "code"}


def map_output_item(item: Any, fn: TextFn) -> Any:
    """An output item with `fn` applied to every text the model wrote in it."""
    if not isinstance(item, dict):
        return item
    kind = str(item.get("type"))
    if kind in _CALL_FIELDS and isinstance(item.get(_CALL_FIELDS[kind]), str):
        return {**item, _CALL_FIELDS[kind]: fn(item[_CALL_FIELDS[kind]])}
    mapped = dict(item)
    for key in ("content", "summary"):
        if isinstance(item.get(key), list):
            mapped[key] = [_map_output_part(part, fn) for part in item[key]]
    return mapped


def _map_output_part(part: Any, fn: TextFn) -> Any:
    if not isinstance(part, dict):
        return part
    field = "refusal" if part.get("type") == "refusal" else "text"
    if str(part.get("type")) in _OUTPUT_PARTS and isinstance(part.get(field), str):
        return {**part, field: fn(part[field])}
    return part


_OUTPUT_PARTS = frozenset({"output_text", "refusal", "summary_text", "reasoning_text"})


def released_part(part: JSON, index: Any, sub: Any, released: Mapping[Hashable, str]) -> JSON:
    kind = part.get("type")
    block = {"output_text": "text", "refusal": "text", "summary_text": "summary",
             "reasoning_text": "reasoning"}.get(str(kind))
    text = released.get((block, index, sub)) if block is not None else None
    if text is None:
        return part
    return {**part, "refusal" if kind == "refusal" else "text": text}


def released_item(item: JSON, index: Any, released: Mapping[Hashable, str]) -> JSON:
    """An output item with the released text of each of its blocks."""
    kind = str(item.get("type"))
    if kind in _CALL_FIELDS:
        text = released.get(("args", index, key_part(item.get("id"))))
        return {**item, _CALL_FIELDS[kind]: text} if text is not None else item
    mapped = dict(item)
    for key in ("content", "summary"):
        parts = item.get(key)
        if isinstance(parts, list):
            mapped[key] = [released_part(part, index, sub, released)
                           if isinstance(part, dict) else part
                           for sub, part in enumerate(parts)]
    return mapped
