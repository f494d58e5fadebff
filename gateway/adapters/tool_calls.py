"""Where each API puts the tool calls a model issues and the tool definitions a client sends.

For the tool rules of the governed surface: reading and rewriting each call's name and
arguments in a whole answer, naming the calls a stream announces (by the block key under which
the adapter streams their arguments), and taking tool definitions out of a request.

- chat completions: `choices[].message.tool_calls[]` (`function` name and `arguments`, or
  `custom` name and `input`) and the legacy `function_call`; on streams the first chunk of a
  call names it; definitions in `tools` (nested or flat: `{"type": "function", "name": ...}`)
  and the legacy `functions`;
- messages: `tool_use` content blocks (`input` as JSON text); on streams `content_block_start`
  names the call; definitions in `tools`;
- responses: `function_call` (`arguments`) and `custom_tool_call` (`input`) output items, and
  `mcp_call` items, calls the provider runs on a remote MCP server the client named (a
  `{"type": "mcp", "server_label": ...}` tool), decided on the server the request's tool of
  that `server_label` points at (gateway/policy/mcp_servers.py), as are `mcp_approval_request` items (a call the provider runs once the client
  approves it: a refused one never reaches the client to approve); on streams
  `response.output_item.added` names the call; definitions in
  `tools` (those with a name: provider-run tools such as web search have none), and the
  `allowed_tools` of `mcp` tools.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from gateway.adapters.base import JSON, CallFn, NamedCall, RemoveFn
from gateway.adapters.reading import dicts, key_part

Named = list[NamedCall]


# --- chat completions ----------------------------------------------------------------------------

#: The kinds of a chat tool call, and the field of each holding its arguments.
_CHAT_KINDS = (("function", "arguments"), ("custom", "input"))


def chat_map_calls(response: JSON, fn: CallFn) -> JSON:
    choices = response.get("choices")
    if not isinstance(choices, list):
        return response
    mapped = []
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            rewritten = _chat_message_calls(message, fn)
            if rewritten is not message:
                choice = {**choice, "message": rewritten}
        mapped.append(choice)
    return response if mapped == choices else {**response, "choices": mapped}


def _chat_message_calls(message: JSON, fn: CallFn) -> JSON:
    """`message` with its calls' arguments rewritten (itself when none changes)."""
    mapped = message
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        rewritten = [_chat_call(call, fn) for call in calls]
        if any(new is not old for new, old in zip(rewritten, calls, strict=True)):
            mapped = {**mapped, "tool_calls": rewritten}
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        arguments = legacy.get("arguments")
        text = fn(_name(legacy), arguments if isinstance(arguments, str) else "")
        if text != arguments:
            mapped = {**mapped, "function_call": {**legacy, "arguments": text}}
    return mapped


def _chat_call(call: Any, fn: CallFn) -> Any:
    """`call` with the arguments of each kind it holds decided (a broken upstream's call may
    hold both, and the client reads the one its `type` names)."""
    if not isinstance(call, dict):
        return call
    mapped = call
    for kind, key in _CHAT_KINDS:
        inner = call.get(kind)
        if isinstance(inner, dict):
            arguments = inner.get(key)
            text = fn(_name(inner), arguments if isinstance(arguments, str) else "")
            if text != arguments:
                mapped = {**mapped, kind: {**inner, key: text}}
    return mapped


def chat_stream_names(payload: JSON) -> Named:
    named: Named = []
    choices = payload.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        # Most chunks carry only text: on the hot path, one look and on.
        if not isinstance(delta, dict) or ("tool_calls" not in delta
                                           and "function_call" not in delta):
            continue
        index = key_part(choice.get("index"))
        for position, call in enumerate(dicts(delta.get("tool_calls"))):
            for kind, _key in _CHAT_KINDS:
                inner = call.get(kind)
                if isinstance(inner, dict) and isinstance(inner.get("name"), str):
                    # Arguments in this chunk stream as the call's first delta.
                    named.append(NamedCall((index, "tool", key_part(call.get("index", position))),
                                           inner["name"]))
        legacy = delta.get("function_call")
        if isinstance(legacy, dict) and isinstance(legacy.get("name"), str):
            named.append(NamedCall((index, "function_call"), legacy["name"]))
    return named


def chat_without_tools(body: JSON, remove: RemoveFn) -> tuple[JSON, list[str]]:
    def name_of(tool: JSON) -> Any:
        """The name a definition (or `tool_choice`) gives its tool: nested under its type
        (`{"type": "function", "function": {"name": ...}}`) or flat (`{"type": "function",
        "name": ...}`, which OpenAI-compatible servers accept). One that spells both is known
        by a refused one of them, as the upstream may read either."""
        inner = tool.get(str(tool.get("type", "function")))
        names = [name for name in (inner.get("name") if isinstance(inner, dict) else None,
                                   tool.get("name")) if isinstance(name, str)]
        return next((name for name in names if remove(name)), names[0] if names else None)

    body, removed = _without(body, "tools", name_of, remove, ("tool_choice",
                                                               "parallel_tool_calls"))
    body, legacy = _without(body, "functions", lambda f: f.get("name"), remove,
                            ("function_call",))
    removed += legacy
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and name_of(choice) in removed:
        body = {k: v for k, v in body.items() if k != "tool_choice"}
    call = body.get("function_call")
    if isinstance(call, dict) and call.get("name") in removed:
        body = {k: v for k, v in body.items() if k != "function_call"}
    return body, removed


# --- messages -----------------------------------------------------------------------------------


def messages_map_calls(response: JSON, fn: CallFn) -> JSON:
    content = response.get("content")
    if not isinstance(content, list):
        return response
    mapped = [_messages_call(block, fn) for block in content]
    return response if mapped == content else {**response, "content": mapped}


def _messages_call(block: Any, fn: CallFn) -> Any:
    if not (isinstance(block, dict) and block.get("type") == "tool_use"):
        return block
    arguments = orjson.dumps(block.get("input", {})).decode()
    text = fn(_name(block), arguments)
    if text == arguments:
        return block
    try:
        return {**block, "input": orjson.loads(text)}
    except orjson.JSONDecodeError:  # a rewrite keeps JSON valid; never send a broken input
        return {**block, "input": {}}


def messages_stream_names(payload: JSON) -> Named:
    block = payload.get("content_block")
    if (payload.get("type") == "content_block_start" and isinstance(block, dict)
            and block.get("type") == "tool_use"):
        given = block.get("input")
        return [NamedCall(key_part(payload.get("index")), _name(block),
                          orjson.dumps(given).decode() if given else "")]
    return []


def messages_map_stream_calls(payload: JSON, fn: CallFn) -> JSON:
    """`message_start` carries a message snapshot that clients start from: its content too."""
    message = payload.get("message")
    if payload.get("type") != "message_start" or not isinstance(message, dict):
        return payload
    mapped = messages_map_calls(message, fn)
    return payload if mapped is message else {**payload, "message": mapped}


def messages_without_tools(body: JSON, remove: RemoveFn) -> tuple[JSON, list[str]]:
    body, removed = _without(body, "tools", lambda t: t.get("name"), remove, ("tool_choice",))
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("name") in removed:
        body = {k: v for k, v in body.items() if k != "tool_choice"}
    return body, removed


# --- responses ----------------------------------------------------------------------------------

#: Output items that are a tool call, and the field holding its arguments: the client runs
#: function and custom tools, the provider runs `mcp_call`s (on the item's `server_label`) and,
#: once the client approves them, `mcp_approval_request`s.
_RESPONSES_CALLS = {"function_call": "arguments", "custom_tool_call": "input",
                    "mcp_call": "arguments", "mcp_approval_request": "arguments"}
_PROVIDER_RUN = frozenset({"mcp_call", "mcp_approval_request"})


def responses_map_calls(response: JSON, fn: CallFn) -> JSON:
    output = response.get("output")
    if not isinstance(output, list):
        return response
    mapped = [_responses_call(item, fn) for item in output]
    return response if mapped == output else {**response, "output": mapped}


def _responses_call(item: Any, fn: CallFn) -> Any:
    field = _RESPONSES_CALLS.get(str(item.get("type"))) if isinstance(item, dict) else None
    if field is None:
        return item
    arguments = item.get(field)
    given = arguments if isinstance(arguments, str) else ""
    server = _server(item)
    text = fn(_name(item), given) if server is None else fn(_name(item), given, server)
    return item if text == arguments else {**item, field: text}


def _server(item: JSON) -> str | None:
    """The MCP server of a provider-run call (an `mcp_call` or `mcp_approval_request` item's
    `server_label`; "" when a broken upstream leaves it out, so that it is still decided as an
    MCP call), else None."""
    if item.get("type") not in _PROVIDER_RUN:
        return None
    label = item.get("server_label")
    return label if isinstance(label, str) else ""


def responses_stream_names(payload: JSON) -> Named:
    item = payload.get("item")
    if (payload.get("type") == "response.output_item.added" and isinstance(item, dict)
            and str(item.get("type")) in _RESPONSES_CALLS):
        given = item.get(_RESPONSES_CALLS[str(item["type"])])
        return [NamedCall(("args", key_part(payload.get("output_index")), key_part(item.get("id"))),
                          _name(item), given if isinstance(given, str) else "", _server(item))]
    return []


#: "Done" events that repeat a call's whole arguments, and the field holding them.
_RESPONSES_DONE = {"response.function_call_arguments.done": "arguments",
                   "response.custom_tool_call_input.done": "input",
                   "response.mcp_call_arguments.done": "arguments"}


def responses_map_stream_calls(payload: JSON, fn: CallFn) -> JSON:
    """Every `response` snapshot (`response.created` to `response.completed`), every
    `output_item.done` item, and the arguments of the "done" events (whose frame does not name
    the tool: decided with the name "")."""
    kind = payload.get("type")
    response, item = payload.get("response"), payload.get("item")
    if isinstance(response, dict):
        mapped = responses_map_calls(response, fn)
        return payload if mapped is response else {**payload, "response": mapped}
    if kind == "response.output_item.done" and isinstance(item, dict):
        mapped = _responses_call(item, fn)
        return payload if mapped is item else {**payload, "item": mapped}
    field = _RESPONSES_DONE.get(kind) if isinstance(kind, str) else None
    if field is not None:
        arguments = payload.get(field)
        text = fn("", arguments if isinstance(arguments, str) else "")
        return payload if text == arguments else {**payload, field: text}
    return payload


def responses_without_tools(body: JSON, remove: RemoveFn) -> tuple[JSON, list[str]]:
    body, mcp_removed = _without_mcp_tools(body, remove)
    body, removed = _without(body, "tools", lambda t: t.get("name"), remove, ("tool_choice",))
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("name") in removed:
        body = {k: v for k, v in body.items() if k != "tool_choice"}
    return body, removed + mcp_removed


def _without_mcp_tools(body: JSON, remove: RemoveFn) -> tuple[JSON, list[str]]:
    """`body` with each `mcp` tool's `allowed_tools` (a list of names, or `tool_names` in an
    object) rid of the tools `remove` says for its `server_label`, and the definition gone when
    none is left (with `tool_choice` and `parallel_tool_calls` when no tool is left at all).
    An `mcp` tool without `allowed_tools` offers whatever the server has: nothing to name."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return body, []
    kept: list[Any] = []
    removed: list[str] = []
    for tool in tools:
        allowed = tool.get("allowed_tools") if isinstance(tool, dict) and tool.get(
            "type") == "mcp" else None
        names = allowed.get("tool_names") if isinstance(allowed, dict) else allowed
        if not isinstance(names, list):
            kept.append(tool)
            continue
        server = tool.get("server_label")
        server = server if isinstance(server, str) else ""
        gone = [n for n in names if isinstance(n, str) and remove(n, server)]
        if not gone:
            kept.append(tool)
            continue
        removed += gone
        left = [n for n in names if n not in gone]
        if left:
            kept.append({**tool, "allowed_tools": {**allowed, "tool_names": left}
                         if isinstance(allowed, dict) else left})
    if not removed:
        return body, []
    if kept:
        return {**body, "tools": kept}, removed
    return {k: v for k, v in body.items()
            if k not in ("tools", "tool_choice", "parallel_tool_calls")}, removed


# --- shared -------------------------------------------------------------------------------------


def _name(call: JSON) -> str:
    """A call's tool name; a call without one (a broken upstream) is still decided, as ""."""
    name = call.get("name")
    return name if isinstance(name, str) else ""


def _without(body: JSON, key: str, name_of: Callable[[JSON], Any], remove: RemoveFn,
             with_none_left: tuple[str, ...]) -> tuple[JSON, list[str]]:
    """`body` without the definitions in `body[key]` whose name `remove` says, and their names.
    When none is left, the list goes (the APIs reject an empty one), with the fields that only
    mean something beside it (`with_none_left`)."""
    tools = body.get(key)
    if not isinstance(tools, list):
        return body, []
    kept, removed = [], []
    for tool in tools:
        name = name_of(tool) if isinstance(tool, dict) else None
        if isinstance(name, str) and remove(name):
            removed.append(name)
        else:
            kept.append(tool)
    if not removed:
        return body, []
    if kept:
        return {**body, key: kept}, removed
    return {k: v for k, v in body.items() if k != key and k not in with_none_left}, removed
