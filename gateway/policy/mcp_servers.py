"""Which server a provider-run MCP tool reaches, as policies name it (`tool.server`).

On the responses API a client declares the remote MCP servers the provider may call:
`{"type": "mcp", "server_label": ..., "server_url": ...}`, or `connector_id` for one of the
provider's own connectors. The label is the caller's free choice (relabel `wiki` as `wiki-2`
and a rule about `wiki` would never match), so it identifies nothing. What identifies the
server is its address:

- a `server_url` equal to a configured `[mcp.servers.NAME] url`, once both are normalised
  (scheme and host case, a host's trailing dot, the default port, dot segments, repeated and
  trailing slashes, percent-encoded unreserved characters; the query and fragment are left
  out), is server NAME; so is any other URL on the origin (scheme, host, port) of exactly one
  configured server;
- any other `server_url` is its normalised form (`https://host/path`), which no configured
  name equals;
- a `connector_id` is `connector:ID`.

A URL a parser could read two ways (credentials, backslashes, spaces or control characters,
non-ASCII or percent-encoded host names, IPv4 addresses not in dotted-quad form) is refused as
an invalid request rather than guessed at. The answer's `mcp_call` items carry only the label:
it is mapped to the server the request declared under it, and a label the request did not
declare is `undeclared:LABEL`. Two declarations of one label for different servers are refused.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import dsl
from gateway.adapters.base import RemoveFn
from gateway.errors import InvalidRequest
from gateway.mcp.settings import McpServer
from gateway.policy.toolcalls import ToolJudge, ToolVerdict

CONNECTOR = "connector:"
UNDECLARED = "undeclared:"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
#: A last label that makes WHATWG URL parsers read the host as an IPv4 address.
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def normalised_url(url: str) -> str:
    """`url` as the server it names is compared: `scheme://host[:port]/path`. ValueError for a
    URL that is not a plain http(s) URL."""
    if not url.isascii() or any(c in url for c in "\\ ") or any(
            ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ValueError("not a plain ASCII URL")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or "@" in parts.netloc:
        raise ValueError("not an http(s) URL without credentials")
    port = parts.port or _DEFAULT_PORTS[scheme]  # ValueError for a port out of range
    shown_port = "" if port == _DEFAULT_PORTS[scheme] else f":{port}"
    return f"{scheme}://{_host(parts.netloc, parts.hostname)}{shown_port}{_path(parts.path)}"


def _host(netloc: str, hostname: str | None) -> str:
    if not hostname:
        raise ValueError("no host")
    if netloc.startswith("["):
        return f"[{ipaddress.IPv6Address(hostname).compressed}]"
    host = hostname.rstrip(".")  # `wiki.example.com.` is `wiki.example.com`
    if not _HOST.fullmatch(host):
        raise ValueError("not a host name")
    if _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]) and str(
            _ipv4_or_none(host)) != host:
        raise ValueError("an IPv4 address not in dotted-quad form")
    return host


def _ipv4_or_none(host: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(host)
    except ValueError:
        return None


def _path(path: str) -> str:
    """The path with unreserved characters unescaped, dot segments resolved, and empty
    segments (repeated and trailing slashes) gone."""
    path = _ESCAPE.sub(lambda m: chr(int(m[1], 16)) if chr(int(m[1], 16)) in _UNRESERVED
                       else m[0].upper(), path)
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    return "/" + "/".join(segments)


def _origin(normalised: str) -> str:
    scheme, rest = normalised.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


@dataclass(frozen=True, slots=True)
class ServerDirectory:
    """The configured MCP servers by normalised URL, and by origin."""

    by_url: Mapping[str, str]
    by_origin: Mapping[str, tuple[str, ...]]

    @classmethod
    def of(cls, servers: Mapping[str, McpServer]) -> ServerDirectory:
        by_url: dict[str, str] = {}
        by_origin: dict[str, tuple[str, ...]] = {}
        for name in sorted(servers):
            try:
                url = normalised_url(servers[name].url)
            except ValueError:
                continue  # a configured URL no caller's URL could equal
            by_url.setdefault(url, name)
            by_origin[_origin(url)] = (*by_origin.get(_origin(url), ()), name)
        return cls(by_url, by_origin)

    def identify(self, url: str) -> str:
        """The server `url` names (ValueError when it is not a plain http(s) URL)."""
        normalised = normalised_url(url)
        if normalised in self.by_url:
            return self.by_url[normalised]
        named = self.by_origin.get(_origin(normalised), ())
        return named[0] if len(named) == 1 else normalised


@lru_cache(maxsize=8)
def _directory(servers: tuple[tuple[str, McpServer], ...]) -> ServerDirectory:
    """The directory of one configuration's servers, made once (not per request)."""
    return ServerDirectory.of(dict(servers))


def _mcp_tools(body: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every `mcp` tool the request declares: in `tools`, and in input items that carry tools
    of their own."""
    lists = [body.get("tools")]
    turns = body.get("input")
    if isinstance(turns, list):
        lists += [turn.get("tools") for turn in turns if isinstance(turn, dict)]
    for tools in lists:
        for tool in tools if isinstance(tools, list) else ():
            if isinstance(tool, dict) and tool.get("type") == "mcp":
                yield tool


def _declared(tool: Mapping[str, Any], directory: ServerDirectory) -> str:
    url, connector = tool.get("server_url"), tool.get("connector_id")
    if url is not None and connector is not None:
        raise InvalidRequest("An `mcp` tool names a `server_url` or a `connector_id`, not both.",
                             param="tools")
    if isinstance(connector, str) and connector:
        return CONNECTOR + connector
    if not isinstance(url, str):
        raise InvalidRequest("An `mcp` tool needs a `server_url` or a `connector_id`.",
                             param="tools")
    try:
        return directory.identify(url)
    except ValueError:
        raise InvalidRequest("An `mcp` tool's `server_url` must be a plain http(s) URL: ASCII, "
                             "without credentials, spaces or backslashes.",
                             param="tools") from None


@dataclass(frozen=True, slots=True)
class ProviderServers:
    """The servers one request declares, by label: what its `mcp` tools and the answer's
    items are decided as."""

    by_label: Mapping[str, str]

    @classmethod
    def declared(cls, body: Mapping[str, Any], servers: Mapping[str, McpServer]
                 ) -> ProviderServers:
        """InvalidRequest for a server the request names unreadably or twice differently."""
        by_label: dict[str, str] = {}
        directory: ServerDirectory | None = None
        for tool in _mcp_tools(body):
            directory = directory or _directory(tuple(servers.items()))
            label = tool.get("server_label")
            label = label if isinstance(label, str) else ""
            server = _declared(tool, directory)
            if by_label.setdefault(label, server) != server:
                raise InvalidRequest(f"Two `mcp` tools labelled {label!r} name different "
                                     f"servers.", param="tools")
        return cls(by_label)

    def server(self, label: str) -> str:
        """The server of `label`, as `tool.server` names it."""
        return self.by_label.get(label, UNDECLARED + label)

    def definition_filter(self, remove: RemoveFn) -> RemoveFn:
        """`remove` (a request's definition filter), told the server behind each label."""
        def refuses(name: str, server: str | None = None) -> bool:
            return remove(name, None if server is None else self.server(server))
        return refuses


class ServerJudge(ToolJudge):
    """A `ToolJudge` that decides each provider-run call on the server behind its label."""

    def __init__(self, policies: Iterable[dsl.CompiledPolicy], facts: dsl.RequestFacts, *,
                 enforced: bool, always_blocked: Collection[str] = (),
                 servers: ProviderServers) -> None:
        super().__init__(policies, facts, enforced=enforced, always_blocked=always_blocked)
        self._servers = servers

    def server_of(self, label: str) -> str:
        return self._servers.server(label)

    def decide(self, name: str, arguments: str, server: str | None = None) -> ToolVerdict:
        return super().decide(name, arguments,
                              None if server is None else self._servers.server(server))
