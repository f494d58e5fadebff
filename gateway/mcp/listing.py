"""The lists the governed route filters: `tools/list`, `prompts/list`, `resources/list` and
`resources/templates/list`. Pure functions.

An entry is hidden when the policy refuses every request for it whatever its arguments
(dsl/tools.py `policy_always_refuses_tool`, the one machinery for all four): a refusing rule
that reads only the target, user and project (and, for tools, the tool's name and server)
fires, or the default refuses and no rule could allow the request. Prompts and resources are
decided under their own targets (`mcp_prompt`, `mcp_resource`), with the `tool.*` facts false,
exactly as `prompts/get` and `resources/read` are, so what is hidden is what would be refused.
Tools are also checked against the configuration's `allowed_tools` / `denied_tools`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import dsl
from gateway.adapters.base import JSON
from gateway.mcp.kinds import KINDS, PROMPT_TARGET, RESOURCE_TARGET
from gateway.mcp.settings import McpServer
from gateway.mcp.tools import MCP_TARGET, listed_tool_facts


def _listed_read_facts(method: str) -> Callable[..., dsl.RequestFacts]:
    """What is known of a prompt or resource before it is read: its name or URI, no
    arguments (the same facts `prompts/get` / `resources/read` start from)."""
    facts = KINDS[method].facts

    def listed(server: McpServer, name: str, *, target: str | None, policy_user: str | None,
               project_id: str) -> dsl.RequestFacts:
        return facts(server, name, {}, target=target, policy_user=policy_user,
                     project_id=project_id)
    return listed


@dataclass(frozen=True, slots=True)
class Listing:
    #: The result's key holding the entries, and each entry's key naming it.
    key: str
    name_key: str
    #: The target the entries' own requests are decided under, unless the caller names one.
    target: str
    #: (server, name, target=, policy_user=, project_id=) -> the facts of a request for it.
    facts: Callable[..., dsl.RequestFacts]
    #: Tools: the configuration's allow/deny lists apply too.
    is_tool: bool = False


LISTINGS: dict[str, Listing] = {
    "tools/list": Listing("tools", "name", MCP_TARGET, listed_tool_facts, is_tool=True),
    "prompts/list": Listing("prompts", "name", PROMPT_TARGET,
                            _listed_read_facts("prompts/get")),
    "resources/list": Listing("resources", "uri", RESOURCE_TARGET,
                              _listed_read_facts("resources/read")),
    "resources/templates/list": Listing("resourceTemplates", "uriTemplate", RESOURCE_TARGET,
                                        _listed_read_facts("resources/read")),
}


def filter_listed(listing: Listing, result: JSON, server: McpServer,
                  refused: Callable[[str], bool] = lambda name: False) -> JSON:
    """A list result without the entries `refused` says the policy always refuses, nor (for
    tools) those the configuration never lets a client call; malformed entries are dropped."""
    entries = result.get(listing.key)
    if not isinstance(entries, list):
        return result
    shown = [entry for entry in entries if isinstance(entry, dict)
             and isinstance(name := entry.get(listing.name_key), str)
             and (not listing.is_tool or server.tool_permitted(name)) and not refused(name)]
    return {**result, listing.key: shown}


def filter_tools(result: JSON, server: McpServer,
                 refused: Callable[[str], bool] = lambda name: False) -> JSON:
    """A `tools/list` result without the tools the configuration never lets a client call,
    nor those `refused` says the policy always refuses."""
    return filter_listed(LISTINGS["tools/list"], result, server, refused)
