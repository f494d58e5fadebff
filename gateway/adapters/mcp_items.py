"""Where a Responses answer holds what the provider's remote MCP tools returned and offered.

When a request defines `{"type": "mcp", "server_label": ..., "server_url": ...}` tools, the
provider itself lists the server's tools and calls them, and the answer reports both:

- `mcp_call` items: the call (`name`, `arguments`, `server_label`) and what the tool returned,
  `output` (text) or `error` (text, or an object such as `{"type": "mcp_tool_execution_error",
  "content": ...}`); the call itself is decided by the tool rules (gateway/adapters/tool_calls.py),
  what it returned by the output rules (`ProviderRun.result`);
- `mcp_list_tools` items: the `tools` the server offered (`server_label`), each with a `name`;
- `mcp_approval_request` items: a call the provider asks the client to approve (`name`,
  `arguments`, `server_label`); the tool rules decide it as a call, and the output rules read
  its arguments as the model's output (`ProviderRun.approval`), wherever the item stands (on a
  stream it comes whole in `response.output_item.added`, where no argument delta precedes it).

Items stand in a whole answer's `output`, in a stream frame's `item`
(`response.output_item.added` / `.done`), and in the `output` of a frame's `response` snapshot
(`response.created` to `response.completed`). Every one of these places is read, whatever the
frame's type: a hostile upstream chooses where it puts an item, and clients read it anywhere.
A snapshot is read one level down only: a `response` inside the snapshot is no place a client
reads items from. An item nested deeper than the gateway can encode again is the upstream's
error, like any other answer the gateway cannot read.
"""

from __future__ import annotations

from typing import Any

from gateway.adapters.base import JSON, ProviderRun
from gateway.errors import UpstreamUnavailable
from gateway.policy.json_strings import MAX_JSON_DEPTH, json_depth, map_strings, strings_found

#: The item types this module decides.
MCP_ITEMS = frozenset({"mcp_call", "mcp_list_tools", "mcp_approval_request"})


def map_mcp_items(payload: JSON, run: ProviderRun) -> JSON:
    """`payload` with every `mcp_call` result decided and every `mcp_list_tools` listing
    filtered by `run`; the payload itself when nothing changes."""
    mapped = _mapped_places(payload, run)
    response = payload.get("response")
    if isinstance(response, dict) and isinstance(response.get("output"), list):
        new = _mapped_places(response, run)
        if new is not response:
            mapped = {**mapped, "response": new}
    return mapped


def _mapped_places(payload: JSON, run: ProviderRun) -> JSON:
    """`payload` with the items of its `output` and its `item` decided."""
    mapped = payload
    output = payload.get("output")
    if isinstance(output, list):
        items = _mapped_items(output, run)
        if items is not output:
            mapped = {**mapped, "output": items}
    item = payload.get("item")
    if isinstance(item, dict):
        new = _mapped_item(item, run)
        if new is not item:
            mapped = {**mapped, "item": new}
    return mapped


def _mapped_items(items: list[Any], run: ProviderRun) -> list[Any]:
    mapped = [_mapped_item(item, run) for item in items]
    changed = any(new is not old for new, old in zip(mapped, items, strict=True))
    return mapped if changed else items


def _mapped_item(item: Any, run: ProviderRun) -> Any:
    if not isinstance(item, dict) or (kind := item.get("type")) not in MCP_ITEMS:
        return item
    if json_depth(item) > MAX_JSON_DEPTH:  # what it holds could not be sent on
        raise UpstreamUnavailable(
            f"The upstream sent a {kind} item nested more than {MAX_JSON_DEPTH} levels deep.")
    if kind == "mcp_call":
        return _decided_call(item, run)
    if kind == "mcp_list_tools":
        return _filtered_listing(item, run)
    if kind == "mcp_approval_request" and isinstance(arguments := item.get("arguments"), str):
        decided = run.approval(_text(item.get("name")), _text(item.get("server_label")),
                               arguments)
        return item if decided == arguments else {**item, "arguments": decided}
    return item


def _decided_call(item: JSON, run: ProviderRun) -> JSON:
    """An `mcp_call` with its `output` and `error` decided together, as one result: a tool
    cannot split a forbidden text between the two."""
    found = {key: item[key] for key in ("output", "error") if item.get(key) is not None}
    if not found:
        return item
    # Object keys are text the client reads as well (a structured error's), and are read and
    # rewritten alike; keys a redaction makes equal stay distinct entries.
    text = "\n".join(text for value in found.values()
                     for text in strings_found(value, keys=True))
    rewrite = run.result(_text(item.get("name")), _text(item.get("arguments")),
                         _text(item.get("server_label")), text)
    mapped = item
    for key, value in found.items():
        new = map_strings(value, rewrite)
        if new != value:
            mapped = {**mapped, key: new}
    return mapped


def _filtered_listing(item: JSON, run: ProviderRun) -> JSON:
    """An `mcp_list_tools` item without the tools `run` hides. When enforced, an entry that
    names no tool (a broken upstream's) goes too: no rule can be asked about it."""
    tools = item.get("tools")
    if not isinstance(tools, list) or not run.enforced:
        return item
    server = _text(item.get("server_label"))
    shown = [tool for tool in tools if isinstance(tool, dict)
             and isinstance(name := tool.get("name"), str) and not run.hides_listed(name, server)]
    return item if len(shown) == len(tools) else {**item, "tools": shown}


def _text(value: Any) -> str:
    """A field a broken upstream may leave out or mistype: its text, or ""."""
    return value if isinstance(value, str) else ""
