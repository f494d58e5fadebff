"""The MCP requests the governed route decides, each as a `CallKind`: `tools/call`,
`prompts/get` and `resources/read`. Pure functions.

Prompts and resources are read by a policy as a tool call is (`input` the request, `output` the
answer), under targets of their own (`mcp_prompt`, `mcp_resource`) so that a policy names them
with `target`, and rollout stages them, apart from tool calls. They are no tool calls: the
`tool.*` facts are false on them, so tool rules never fire there, and they do not count against
the `tool_calls` quota.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import orjson

import dsl
from gateway.adapters.base import JSON
from gateway.errors import McpInvalidParams
from gateway.mcp.settings import McpServer
from gateway.mcp.tools import (
    NOT_TEXT_KEYS,
    holding_result,
    mcp_facts,
    redact_result,
    result_text,
    tool_call_params,
    tool_facts,
)
from gateway.policy.json_strings import map_strings
from gateway.policy.json_strings import strings_found as map_strings_found

PROMPT_TARGET = "mcp_prompt"
RESOURCE_TARGET = "mcp_resource"
#: Keys of a prompt's messages or a resource's contents whose strings are no text a reader sees.
NOT_READ_KEYS = NOT_TEXT_KEYS | {"role", "_meta"}


@dataclass(frozen=True, slots=True)
class CallKind:
    method: str
    #: (name or URI, arguments) of the request, or the protocol's invalid-params error.
    params: Callable[[JSON], tuple[str, JSON]]
    #: The facts a policy decides on: (server, name, arguments, target, user, project).
    facts: Callable[..., dsl.RequestFacts]
    #: What `output` rules read of the answer, and the answer with that text redacted.
    result_text: Callable[[JSON], str]
    redact_result: Callable[[JSON, dsl.Redactor], JSON]
    #: The answer to an escalated request (message, name): a valid result that says so.
    holding_result: Callable[[str | None, str], JSON]
    #: What the event says was called, e.g. {"tool": {"name": ...}}: names, never a text.
    event: Callable[[str], JSON]
    #: Counted against the `tool_calls` quota, and checked against the configuration lists.
    is_tool_call: bool


def _prompt_params(params: JSON) -> tuple[str, JSON]:
    name, arguments = params.get("name"), params.get("arguments") or {}
    if not isinstance(name, str) or not name:
        raise McpInvalidParams("Invalid params: prompts/get needs the prompt's 'name'.")
    if not isinstance(arguments, dict):
        raise McpInvalidParams("Invalid params: 'arguments' must be an object.")
    return name, arguments


def _resource_params(params: JSON) -> tuple[str, JSON]:
    uri = params.get("uri")
    if not isinstance(uri, str) or not uri:
        raise McpInvalidParams("Invalid params: resources/read needs the resource's 'uri'.")
    return uri, {}


def _read_facts(default_target: str) -> Callable[..., dsl.RequestFacts]:
    def facts(server: McpServer, name: str, arguments: JSON, *, target: str | None,
              policy_user: str | None, project_id: str) -> dsl.RequestFacts:
        text = name + ("\n" + orjson.dumps(arguments).decode() if arguments else "")
        base = mcp_facts(server, target=target, policy_user=policy_user,
                         project_id=project_id, default_target=default_target)
        return replace(base, input_text=text, last_user_text=text,
                       estimated_input_tokens=len(text) // 4)
    return facts


def _read_text(key: str) -> Callable[[JSON], str]:
    return lambda result: "\n".join(map_strings_found(result.get(key) or [], NOT_READ_KEYS))


def _redact_read(key: str) -> Callable[[JSON, dsl.Redactor], JSON]:
    def redact(result: JSON, redactor: dsl.Redactor) -> JSON:
        return {**result, key: map_strings(result.get(key) or [],
                                           lambda text: redactor.apply(text)[0], NOT_READ_KEYS,
                                           keys=False)}  # the protocol's field names
    return redact


def _prompt_holding(message: str | None, name: str) -> JSON:
    text = message or "This prompt is held for review."
    return {"description": text,
            "messages": [{"role": "assistant", "content": {"type": "text", "text": text}}]}


def _resource_holding(message: str | None, uri: str) -> JSON:
    text = message or "This resource is held for review."
    return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": text}]}


KINDS: dict[str, CallKind] = {
    "tools/call": CallKind(
        "tools/call", tool_call_params, tool_facts, result_text, redact_result,
        lambda message, name: holding_result(message),
        lambda name: {"tool": {"name": name}}, True),
    "prompts/get": CallKind(
        "prompts/get", _prompt_params, _read_facts(PROMPT_TARGET), _read_text("messages"),
        _redact_read("messages"), _prompt_holding, lambda name: {"prompt": {"name": name}},
        False),
    "resources/read": CallKind(
        "resources/read", _resource_params, _read_facts(RESOURCE_TARGET),
        _read_text("contents"), _redact_read("contents"), _resource_holding,
        # A URI may carry what a text would (a path, a query, an address): only its scheme.
        lambda uri: {"resource": {"scheme": uri.partition(":")[0] if ":" in uri else None}},
        False),
}
