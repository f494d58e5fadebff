"""What identifies the server of a provider-run MCP tool (gateway/policy/mcp_servers.py): its
URL, normalised and matched against the configured servers, never the caller's label."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidRequest
from gateway.mcp.settings import McpServer
from gateway.policy.mcp_servers import ProviderServers, ServerDirectory, normalised_url

SERVERS = {name: McpServer(name, url) for name, url in (
    ("wiki", "https://wiki.example.com/mcp"), ("a", "https://shared.example/a/"),
    ("b", "https://shared.example/b"), ("local", "http://127.0.0.1:8080/mcp"))}


@pytest.mark.parametrize(("url", "expected"), [
    ("HTTPS://Wiki.Example.COM:443/mcp/", "https://wiki.example.com/mcp"),
    ("https://wiki.example.com./%6d%63p?x=1#frag", "https://wiki.example.com/mcp"),
    ("https://wiki.example.com//a/./../mcp", "https://wiki.example.com/mcp"),
    ("https://wiki.example.com/a%2fb", "https://wiki.example.com/a%2Fb"),
    ("http://[0:0::1]:80/", "http://[::1]/"),
    ("https://wiki.example.com:8443", "https://wiki.example.com:8443/"),
])
def test_urls_are_compared_normalised(url: str, expected: str) -> None:
    assert normalised_url(url) == expected


@pytest.mark.parametrize("url", [
    "https://wiki.example.com\\@evil.example/", "https://evil.example\\@wiki.example.com/",
    "https://x@wiki.example.com/", "https://%77iki.example.com/", "https://wiki.éxample.com/",
    "https://wiki.exa\nmple.com/", " https://wiki.example.com/", "https://2130706433/",
    "https://0x7f.0.0.1/", "https://127.1/", "https://1.2.3.04/", "ftp://wiki.example.com/",
    "https://wiki.example.com:70000/", "https:///mcp", "wiki.example.com/mcp", ""])
def test_urls_read_two_ways_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        normalised_url(url)


@pytest.mark.parametrize(("url", "server"), [
    ("https://wiki.example.com/mcp", "wiki"), ("https://WIKI.example.com/other/path", "wiki"),
    ("https://shared.example/a", "a"), ("https://shared.example/b/", "b"),
    # Two configured servers share the origin: another path is neither of them.
    ("https://shared.example/c", "https://shared.example/c"),
    ("http://127.0.0.1:8080/mcp", "local"), ("http://127.0.0.1/mcp", "http://127.0.0.1/mcp"),
    ("https://wiki.example.com.evil.example/mcp", "https://wiki.example.com.evil.example/mcp"),
])
def test_a_url_is_the_configured_server_it_names_or_itself(url: str, server: str) -> None:
    assert ServerDirectory.of(SERVERS).identify(url) == server


def test_labels_map_to_the_servers_the_request_declared() -> None:
    body = {"tools": [{"type": "mcp", "server_label": "wiki-2",
                       "server_url": "https://wiki.example.com/mcp"},
                      {"type": "function", "name": "f"}],
            "input": [{"type": "additional_tools", "tools": [
                {"type": "mcp", "server_label": "box", "connector_id": "connector_dropbox"}]},
                "text"]}
    servers = ProviderServers.declared(body, SERVERS)
    assert [servers.server(label) for label in ("wiki-2", "box", "wiki", "")] == [
        "wiki", "connector:connector_dropbox", "undeclared:wiki", "undeclared:"]
    seen: list[tuple[str, str | None]] = []
    remove = servers.definition_filter(lambda name, server=None: bool(seen.append(
        (name, server))))
    assert not remove("edit_page", "wiki-2") and not remove("f")
    assert seen == [("edit_page", "wiki"), ("f", None)]


def test_a_label_declared_twice_must_name_one_server() -> None:
    tool = {"type": "mcp", "server_label": "x", "server_url": "https://wiki.example.com/mcp"}
    same = {**tool, "server_url": "https://WIKI.example.com/mcp/"}
    assert ProviderServers.declared({"tools": [tool, same]}, SERVERS).server("x") == "wiki"
    other = {**tool, "server_url": "https://docs.example.com/mcp"}
    with pytest.raises(InvalidRequest):
        ProviderServers.declared({"tools": [tool, other]}, SERVERS)
