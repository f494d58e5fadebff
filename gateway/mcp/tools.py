"""Tool calls as policy facts, and the rewrites decisions make to them. Pure functions.

A `tools/call` is decided with the policy language's tool facts (dsl/tools.py): `tool.name`,
`tool.server` (the `[mcp.servers]` name), the `tool_arguments` text (the arguments as JSON text)
and, on the answer, the `tool_result` text. The target is `mcp_tool` unless the caller names
another. `input` is the tool name on its first line followed by the arguments' text, and
`output` the text of the tool's result, as they have always been, so policies written against
those texts keep their meaning.
"""

from __future__ import annotations

from dataclasses import replace

import orjson

import dsl
from gateway.adapters.base import JSON
from gateway.errors import McpInvalidParams
from gateway.mcp.settings import McpServer
from gateway.policy.json_strings import map_strings
from gateway.policy.json_strings import strings_found as map_strings_found

MCP_SURFACE = "mcp"
MCP_TARGET = "mcp_tool"


def tool_call_params(params: JSON) -> tuple[str, JSON]:
    """(tool name, arguments) of a `tools/call`, or the protocol's invalid-params error."""
    if "task" in params:
        # A task's result is fetched later with tasks/result, past the output rules.
        raise McpInvalidParams("Invalid params: task-augmented tool calls are not supported "
                               "on the governed route; call the tool without 'task'.")
    name, arguments = params.get("name"), params.get("arguments", {})
    if not isinstance(name, str) or not name:
        raise McpInvalidParams("Invalid params: tools/call needs the tool's 'name'.")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise McpInvalidParams("Invalid params: 'arguments' must be an object.")
    return name, arguments


def mcp_facts(server: McpServer, *, target: str | None, policy_user: str | None,
              project_id: str, default_target: str = MCP_TARGET) -> dsl.RequestFacts:
    """The facts of any governed MCP request, before its call and texts are filled in."""
    return dsl.RequestFacts(
        surface=MCP_SURFACE, model=f"mcp:{server.name}", target=target or default_target,
        policy_user=policy_user, project_id=project_id, message_count=1, has_tools=True)


def tool_facts(server: McpServer, name: str, arguments: JSON, *, target: str | None,
               policy_user: str | None, project_id: str) -> dsl.RequestFacts:
    base = mcp_facts(server, target=target, policy_user=policy_user, project_id=project_id)
    facts = dsl.tool_facts(base, name, server.name, orjson.dumps(arguments).decode())
    return replace(facts, last_user_text=facts.input_text,
                   estimated_input_tokens=len(facts.input_text) // 4)


def listed_tool_facts(server: McpServer, name: str, *, target: str | None,
                      policy_user: str | None, project_id: str) -> dsl.RequestFacts:
    """What is known of a tool before it is called: enough for `tool_always_refused`."""
    return dsl.tool_facts(mcp_facts(server, target=target, policy_user=policy_user,
                                    project_id=project_id), name, server.name, "")


#: Keys of a result's content whose strings are no text a reader sees: kinds, media types,
#: base64 payloads (images, audio, binary resources).
NOT_TEXT_KEYS = frozenset({"type", "mimeType", "data", "blob"})


def result_text(result: JSON) -> str:
    """What `output` rules read of a tool result: every text of its content blocks (text,
    embedded resources' text, links' names and URIs), and its structured content as JSON."""
    parts = map_strings_found(result.get("content") or [], NOT_TEXT_KEYS)
    structured = result.get("structuredContent")
    if structured is not None:
        parts.append(orjson.dumps(structured).decode())
    return "\n".join(parts)


def redact_result(result: JSON, redactor: dsl.Redactor) -> JSON:
    """The result with the texts of its content and its structured content redacted."""
    def redact(text: str) -> str:
        return redactor.apply(text)[0]

    # Content blocks have the protocol's field names; structured content is the tool's own.
    redacted = {**result, "content": map_strings(result.get("content") or [], redact,
                                                 NOT_TEXT_KEYS, keys=False)}
    if "structuredContent" in result:
        redacted["structuredContent"] = map_strings(result["structuredContent"], redact)
    return redacted


def holding_result(message: str | None) -> JSON:
    """The answer to an escalated call: the tool did not run, and a reviewer will look at it."""
    text = message or "This tool call is held for review; it has not been run."
    return {"content": [{"type": "text", "text": text}], "isError": True}


def with_policy(result: JSON, policy: JSON) -> JSON:
    """`result` with the `policy` object in its `_meta`."""
    meta = result.get("_meta")
    return {**result, "_meta": {**(meta if isinstance(meta, dict) else {}), "policy": policy}}


def error_with_policy(error: JSON, policy: JSON) -> JSON:
    """A JSON-RPC error object with the `policy` object in its `data` (when `data` is an object
    or absent: another value is the server's and stays as it is)."""
    data = error.get("data")
    if data is None:
        return {**error, "data": {"policy": policy}}
    if isinstance(data, dict):
        return {**error, "data": {**data, "policy": policy}}
    return error
