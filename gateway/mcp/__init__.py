"""The MCP surface: `/mcp/NAME` relays an upstream MCP server's Streamable HTTP transport as it
is, `/policy/mcp/NAME` governs its tool calls with the projects, policies, quotas and events of
the other governed routes (docs/mcp.md)."""
