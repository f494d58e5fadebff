"""The upstream of the MCP tests: a real MCP server built with the official SDK's FastMCP,
served over Streamable HTTP by uvicorn on 127.0.0.1 (run as a process by the fixture).

    python mcp_server.py PORT MARKER_DIR [json]

With `json`, the server answers each POST with one JSON body instead of an SSE stream.

It accepts only requests with `Authorization: Bearer upstream-mcp-secret` (the credential the
gateway holds in its configuration), and notes every cancelled tool call in MARKER_DIR.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import uvicorn
from mcp.server.fastmcp import Context, FastMCP
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

UPSTREAM_SECRET = "upstream-mcp-secret"

server = FastMCP("test-tools", json_response=len(sys.argv) > 3 and sys.argv[3] == "json")
marker_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(".")


@server.tool()
def echo(text: str) -> str:
    """Returns the text unchanged."""
    return text


@server.tool()
def lookup_contact(name: str) -> str:
    """A contact's details, with personal data in them."""
    return f"{name} can be reached at jane.doe@example.com or on the office line."


@server.tool()
def failing_lookup(name: str) -> str:
    """Fails with personal data in its error."""
    raise ValueError(f"no entry for {name}; ask jane.doe@example.com")


@server.tool()
async def chatty_lookup(name: str, ctx: Context) -> str:  # type: ignore[type-arg]
    """Logs personal data while it works; its result has none."""
    await ctx.info(f"found {name} at jane.doe@example.com")
    await ctx.report_progress(1, 1, message="looked up jane.doe@example.com")
    return "lookup done"


@server.tool()
def delete_records(table: str) -> str:
    """Destructive: the gateway's configuration hides it."""
    return f"deleted every row of {table}"


@server.tool()
def wipe_disk(device: str) -> str:
    """Destructive: the example policy refuses it by name (a `tools` list glob)."""
    return f"wiped {device}"


@server.prompt()
def contact_card(name: str) -> str:
    """A prompt with personal data in it."""
    return f"Write a card for {name}; their address is jane.doe@example.com."


@server.resource("notes://{note_id}")
def note(note_id: str) -> str:
    """A note, with personal data in it."""
    return f"Note {note_id}: ask jane.doe@example.com."


@server.resource("secrets://deploy-keys")
def deploy_keys() -> str:
    """What the example policy keeps closed."""
    return "deploy key: not for agents"


@server.tool()
def run_shell(command: str) -> str:
    """Pretends to run a shell command."""
    return f"ran: {command}"


@server.tool()
async def slow(seconds: float, tag: str) -> str:
    """Sleeps; notes in MARKER_DIR when it is cancelled."""
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        (marker_dir / f"cancelled-{tag}").write_text("cancelled")
        raise
    return "slept"


@server.tool()
async def with_progress(steps: int, ctx: Context) -> str:  # type: ignore[type-arg]
    """Reports progress and a log message before its result."""
    for step in range(steps):
        await ctx.report_progress(step + 1, steps)
        await ctx.info(f"step {step + 1}")
    return f"done in {steps} steps"


@server.tool()
def contacts_by_mail() -> dict[str, dict[str, str]]:
    """Contacts keyed by their e-mail address: personal data in the structured result's keys."""
    return {"jane.doe@example.com": {"name": "Jane"}, "john.roe@example.com": {"name": "John"}}


class Confirmation(BaseModel):
    confirmed: bool


@server.tool()
async def confirm_then_lookup(name: str, ctx: Context) -> str:  # type: ignore[type-arg]
    """Asks the client (an elicitation, a request of the server's) before answering."""
    answer = await ctx.elicit(f"Look up {name}?", schema=Confirmation)
    if answer.action != "accept" or not answer.data.confirmed:
        return "not looked up"
    return f"{name}: jane.doe@example.com"


class RequireCredential:
    """401 for any request without the upstream credential."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            if headers.get(b"authorization") != f"Bearer {UPSTREAM_SECRET}".encode():
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": b"missing credential"})
                return
        await self.app(scope, receive, send)


def main() -> None:
    port = int(sys.argv[1])
    app = RequireCredential(server.streamable_http_app())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
