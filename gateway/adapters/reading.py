"""Reading wire bodies for the governed surface, shared by the adapters: the texts a body
carries (read through the very functions that rewrite them), token estimates, the input view a
policy reads, and tolerant access to fields a broken upstream may leave out or mistype."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gateway.adapters.base import JSON, InputView, Usage, dumps
from gateway.adapters.inventory import unescaped_json_text

TextFn = Callable[[str], str]


def texts_of(mapper: Callable[[TextFn], object]) -> list[str]:
    """The texts a text-mapping function visits, in order: `mapper(fn)` must call `fn` on each.

    Reading the texts through the very function that rewrites them (`map_input_texts`) is what
    makes what a policy sees and what redaction changes the same set, by construction.
    """
    seen: list[str] = []

    def record(text: str) -> str:
        seen.append(text)
        return text

    mapper(record)
    return seen


def estimate_tokens(texts: Iterable[str]) -> int:
    """About four characters per token: `ceil(len(text) / 4)` per text, summed. The same
    estimate the echo upstream reports as usage, so there a reservation equals its settlement."""
    return sum(-(-len(text) // 4) for text in texts)


def with_unescaped(texts: list[str]) -> str:
    """`texts` joined by newlines, followed by the decoded form of any JSON text among them that
    spells words with escapes (`unescaped_json_text`)."""
    unescaped = [u for text in texts if (u := unescaped_json_text(text)) is not None]
    return "\n".join([*texts, *unescaped]) if unescaped else "\n".join(texts)


def tool_arguments_texts(node: Any) -> list[str]:
    """The arguments of every tool call in `node` (a request's messages or input items): chat's
    `tool_calls[].function.arguments`, Anthropic `tool_use` blocks' `input` (as JSON), and
    Responses `function_call` items' `arguments`."""
    found: list[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            kind = item.get("type")
            function = item.get("function")
            if kind == "tool_use" and "input" in item:
                found.append(dumps(item["input"]).decode())
            elif kind == "function_call" and isinstance(item.get("arguments"), str):
                found.append(item["arguments"])
            elif isinstance(function, dict) and isinstance(function.get("arguments"), str):
                found.append(function["arguments"])
            stack.extend(v for v in reversed(item.values()) if isinstance(v, list | dict))
    return found


def make_input_view(*, texts: list[str], last_user_texts: list[str], system_texts: list[str],
                    message_count: int, has_tools: bool, max_output_tokens: int | None,
                    tool_arguments: list[str] | None = None) -> InputView:
    return InputView(
        tool_arguments_text=with_unescaped(tool_arguments or []),
        # JSON texts (tool-call arguments) that spell words with escapes are read decoded too.
        input_text=with_unescaped(texts),
        last_user_text="\n".join(last_user_texts),
        system_text="\n".join(system_texts),
        message_count=message_count,
        has_tools=has_tools,
        max_output_tokens=max_output_tokens,
        estimated_input_tokens=estimate_tokens(texts),
    )


def int_or_none(value: Any) -> int | None:
    """`value` if it is an integer (a JSON `true` is not), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage_from(usage: Any, input_key: str, output_key: str) -> Usage | None:
    """`Usage` from an upstream usage object; counts that are missing, malformed or negative
    are 0 (a broken upstream must not be able to corrupt a quota counter)."""
    if not isinstance(usage, dict):
        return None
    return Usage(_count(usage.get(input_key)), _count(usage.get(output_key)))


def _count(value: Any) -> int:
    return max(int_or_none(value) or 0, 0)


def non_empty_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0


def dicts(value: Any) -> list[JSON]:
    """The objects in `value` if it is a list (malformed entries skipped), else none."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def str_or(value: Any, default: str) -> str:
    return value if isinstance(value, str) else default


def key_part(value: Any) -> int | str | None:
    """`value` as part of a block key: an upstream's index or id, which a broken upstream may
    send as any JSON value (a list is not even hashable)."""
    return value if isinstance(value, int | str) else None


def event_name(event: str | None, payload: Mapping[str, Any]) -> str | None:
    """The `event:` name of a frame of an API whose event names repeat the payload's `type`."""
    if event:
        return event
    kind = payload.get("type")
    return kind if isinstance(kind, str) else None


def new_id(prefix: str) -> str:
    """A fresh id in the providers' style (`chatcmpl-…`, `msg_…`, `resp_…`)."""
    return prefix + uuid.uuid4().hex[:24]
