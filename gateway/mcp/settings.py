"""`[mcp.servers.NAME]`: the upstream MCP servers the gateway fronts (docs/configuration.md).

Pure parsing, no I/O: the credentials a server needs come from the configuration (`headers`) or
from environment variables it names (`headers_env`), never from the client.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from dsl.tool_names import glob_matcher, tool_key

SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KNOWN = {"url", "headers", "headers_env", "connect_timeout", "idle_timeout", "total_timeout",
          "allowed_tools", "denied_tools"}
#: Headers the gateway sets itself or relays from the client: configured headers may not.
_RESERVED_HEADERS = {"host", "content-length", "content-type", "accept", "mcp-session-id",
                     "mcp-protocol-version", "last-event-id", "transfer-encoding", "connection"}


@dataclass(frozen=True, slots=True)
class McpServer:
    """One upstream MCP server reached over Streamable HTTP."""

    name: str
    url: str
    #: Sent to the upstream on every request (its credentials); never shown to clients.
    headers: tuple[tuple[str, str], ...] = ()
    connect_timeout: float = 10.0
    #: Longest wait for the response head, or for the next bytes of a response stream.
    idle_timeout: float = 60.0
    #: Longest time one tool call or other POST may take, its stream included.
    total_timeout: float = 300.0
    #: Tool name globs a governed client may see and call (empty: every tool) ...
    allowed_tools: tuple[str, ...] = ()
    #: ... minus these globs, which always win.
    denied_tools: tuple[str, ...] = ()

    def tool_permitted(self, tool_name: str) -> bool:
        """Whether the configuration lets governed clients see and call `tool_name`. A denied
        glob also matches the name folded as policies compare tool names (case, full-width
        forms, invisible characters, look-alike letters), since a server may read it so; an
        allowed glob must match the name as it is."""
        if any(fnmatch.fnmatchcase(tool_name, glob) for glob in self.denied_tools):
            return False
        if self.denied_tools and _denied_folded(self.denied_tools)(tool_key(tool_name)):
            return False
        return not self.allowed_tools or any(
            fnmatch.fnmatchcase(tool_name, glob) for glob in self.allowed_tools)


@lru_cache(maxsize=64)
def _denied_folded(globs: tuple[str, ...]) -> Callable[[str], bool]:
    return glob_matcher(globs)


def mcp_servers(section: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, McpServer]:
    """The `[mcp]` section's servers; ValueError naming the bad key otherwise."""
    unknown = set(section) - {"servers"}
    if unknown:
        raise ValueError(f"[mcp]: unknown key(s) {sorted(unknown)}; known: ['servers']")
    servers = section.get("servers", {})
    if not isinstance(servers, Mapping):
        raise ValueError("[mcp.servers] must be a table of server name -> settings")
    return {str(name): _server(str(name), spec, env) for name, spec in servers.items()}


def _server(name: str, spec: Any, env: Mapping[str, str]) -> McpServer:
    where = f"[mcp.servers.{name}]"
    if not SERVER_NAME.match(name):
        raise ValueError(f"{where}: a server name is 1-64 letters, digits, '_', '.' or '-'")
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where} must be a table")
    unknown = set(spec) - _KNOWN
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(_KNOWN)}")
    url = spec.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"{where}: `url` must be the server's http(s) Streamable HTTP endpoint")
    headers = dict(_string_table(spec.get("headers", {}), f"{where} headers"))
    for header, variable in _string_table(spec.get("headers_env", {}), f"{where} headers_env"):
        if variable not in env:
            raise ValueError(f"{where}: headers_env.{header} names ${variable}, which is not set")
        headers[header] = env[variable]
    reserved = sorted(h for h in headers if h.lower() in _RESERVED_HEADERS)
    if reserved:
        raise ValueError(f"{where}: the gateway sets {reserved} itself")
    timeouts = {key: _positive(spec.get(key, default), f"{where} {key}") for key, default in
                (("connect_timeout", 10.0), ("idle_timeout", 60.0), ("total_timeout", 300.0))}
    return McpServer(
        name=name, url=url, headers=tuple((k.lower(), v) for k, v in headers.items()),
        allowed_tools=_globs(spec.get("allowed_tools", []), f"{where} allowed_tools"),
        denied_tools=_globs(spec.get("denied_tools", []), f"{where} denied_tools"), **timeouts)


def _string_table(value: Any, what: str) -> list[tuple[str, str]]:
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"{what} must be a table of header name -> string")
    return [(str(k), str(v)) for k, v in value.items()]


def _globs(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(g, str) and g for g in value):
        raise ValueError(f"{what} must be a list of tool name globs")
    return tuple(value)


def _positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{what} must be a positive number of seconds")
    return float(value)
