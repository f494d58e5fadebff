"""`/policy/mcp/NAME` with the official MCP SDK client against a real FastMCP server: tools
filtered, calls allowed unchanged, refused with the `policy` object, redacted, held, counted
against the `tool_calls` quota, and shadowed; one enforcement event per call, without text."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import httpx2
import jwt
import pytest
from mcp import ClientSession, types
from mcp.shared.exceptions import McpError
from mcp_support import JWT_AUDIENCE, JWT_SECRET, McpGateway

from gateway.errors import QuotaUnavailable

pytestmark = pytest.mark.slow
GOVERNED = "/policy/mcp/tools"


def _no_text(event: dict[str, Any], *texts: str) -> None:
    flat = repr(event)
    for text in texts:
        assert text not in flat, f"{text!r} leaked into the event"


@pytest.mark.parametrize("server", ["tools", "tools_json"])
def test_tools_list_hides_denied_tools(mcp_gateway: McpGateway, server: str) -> None:
    async def work(session: ClientSession) -> list[str]:
        return [tool.name for tool in (await session.list_tools()).tools]

    names = mcp_gateway.session(f"/policy/mcp/{server}", work)
    assert "delete_records" not in names
    assert {"echo", "lookup_contact", "run_shell", "slow"} <= set(names)
    # The transparent route shows the server's whole list.
    assert "delete_records" in mcp_gateway.session(f"/mcp/{server}", work)


def test_json_answers_are_governed_like_streams(mcp_gateway: McpGateway) -> None:
    async def work(session: ClientSession) -> tuple[Any, McpError]:
        result = await session.call_tool("lookup_contact", {"name": "Jane"})
        with pytest.raises(McpError) as raised:
            await session.call_tool("run_shell", {"command": "mkfs /dev/sda"})
        return result, raised.value

    result, refused = mcp_gateway.session("/policy/mcp/tools_json", work)
    assert "[REDACTED:EMAIL]" in result.content[0].text
    assert result.meta["policy"]["redacted_spans"] == {"email": 2}
    assert refused.error.data["policy"]["reason_code"] == "DESTRUCTIVE_TOOL_CALL"
    events = mcp_gateway.tool_events(2)
    assert [(e["mcp"]["server"], e["outcome"]) for e in events] == [
        ("tools_json", "completed"), ("tools_json", "refused")]


def test_allowed_call_passes_unchanged_with_one_event(mcp_gateway: McpGateway) -> None:
    async def work(session: ClientSession) -> Any:
        return await session.call_tool("echo", {"text": "hello tools"})

    result = mcp_gateway.session(GOVERNED, work)
    assert not result.isError
    assert result.content[0].text == "hello tools"
    assert result.structuredContent == {"result": "hello tools"}
    policy = result.meta["policy"]
    assert policy["decision"] == "allow" and policy["policy_id"] == "mcp_tools"
    assert policy["policy_target"] == "mcp_tool" and policy["enforced"] is True
    (event,) = mcp_gateway.tool_events()
    assert event["event_type"] == "enforcement" and event["outcome"] == "completed"
    assert event["mcp"] == {"server": "tools", "method": "tools/call"}
    assert event["tool"] == {"name": "echo"}
    assert event["decision"] == "allow" and event["surface"] == "mcp"
    assert event["latency_ms"] >= event["overhead_ms"] >= 0
    _no_text(event, "hello tools")


def test_denied_tool_is_refused_with_policy_and_event(mcp_gateway: McpGateway) -> None:
    async def work(session: ClientSession) -> McpError:
        with pytest.raises(McpError) as raised:
            await session.call_tool("delete_records", {"table": "customers"})
        return raised.value

    error = mcp_gateway.session(GOVERNED, work).error
    assert error.code == -32001
    assert error.data["policy"]["decision"] == "refuse"
    assert error.data["policy"]["reason_code"] == "TOOL_NOT_PERMITTED"
    (event,) = mcp_gateway.tool_events()
    assert event["outcome"] == "refused" and event["tool"] == {"name": "delete_records"}
    assert event["effective_decision"] == "refuse"
    _no_text(event, "customers")


def test_denylisted_argument_is_refused(mcp_gateway: McpGateway) -> None:
    async def work(session: ClientSession) -> McpError:
        with pytest.raises(McpError) as raised:
            await session.call_tool("run_shell", {"command": "rm -rf /srv/data"})
        return raised.value

    error = mcp_gateway.session(GOVERNED, work).error
    assert error.code == -32001
    assert error.message == "This tool call looks destructive and was not run."
    assert error.data["policy"]["reason_code"] == "DESTRUCTIVE_TOOL_CALL"
    assert error.data["policy"]["denylist_hits"] == ["rm -rf"]
    (event,) = mcp_gateway.tool_events()
    assert event["denylist_hits"] == ["rm -rf"] and event["outcome"] == "refused"
    _no_text(event, "/srv/data")


def test_pii_in_arguments_is_redacted_before_the_tool_sees_it(mcp_gateway: McpGateway) -> None:
    async def work(session: ClientSession) -> Any:
        return await session.call_tool("echo", {"text": "call me at +1 415 555 0134"})

    result = mcp_gateway.session(GOVERNED, work)
    # The tool echoes what it got: the redacted argument.
    assert result.content[0].text == "call me at [REDACTED:PHONE]"
    assert result.meta["policy"]["redacted_spans"]["phone"] == 1
    (event,) = mcp_gateway.tool_events()
    _no_text(event, "415 555")


def test_pii_in_result_is_redacted(mcp_gateway: McpGateway) -> None:
    async def work(session: ClientSession) -> Any:
        return await session.call_tool("lookup_contact", {"name": "Jane"})

    result = mcp_gateway.session(GOVERNED, work)
    assert "jane.doe@example.com" not in result.content[0].text
    assert "[REDACTED:EMAIL]" in result.content[0].text
    assert "jane.doe@example.com" not in str(result.structuredContent)
    # Once in the text block, once in the structured content.
    assert result.meta["policy"]["redacted_spans"] == {"email": 2}
    (event,) = mcp_gateway.tool_events()
    assert event["redacted_spans"] == {"email": 2} and event["outcome"] == "completed"
    _no_text(event, "jane.doe", "Jane can be reached")


def test_pii_in_a_tool_error_is_redacted(mcp_gateway: McpGateway) -> None:
    async def work(session: ClientSession) -> Any:
        return await session.call_tool("failing_lookup", {"name": "Jane"})

    result = mcp_gateway.session(GOVERNED, work)
    assert result.isError and "no entry for Jane" in result.content[0].text
    assert "jane.doe@example.com" not in result.content[0].text
    assert result.meta["policy"]["redacted_spans"] == {"email": 1}


def test_pii_in_notifications_while_the_tool_runs_is_redacted(mcp_gateway: McpGateway) -> None:
    logged: list[str] = []
    progress: list[str | None] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logged.append(str(params.data))

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message)

    async def work(session: ClientSession) -> Any:
        return await session.call_tool("chatty_lookup", {"name": "Jane"},
                                       progress_callback=on_progress)

    result = mcp_gateway.session(GOVERNED, work, logging_callback=on_log)
    assert result.content[0].text == "lookup done"
    assert logged == ["found Jane at [REDACTED:EMAIL]"]
    assert progress == ["looked up [REDACTED:EMAIL]"]
    assert result.meta["policy"]["redacted_spans"].get("email", 0) >= 1
    (event,) = mcp_gateway.tool_events()
    _no_text(event, "jane.doe")


def test_payment_is_held_for_review(mcp_gateway: McpGateway) -> None:
    async def work(session: ClientSession) -> Any:
        return await session.call_tool("transfer_funds", {"amount": 500})

    result = mcp_gateway.session(GOVERNED, work)
    assert result.isError
    assert "held for review" in result.content[0].text
    assert result.meta["policy"]["decision"] == "escalate"
    (event,) = mcp_gateway.tool_events()
    assert event["outcome"] == "escalated"


def test_tool_calls_quota_refuses_the_third_call(mcp_gateway: McpGateway) -> None:
    async def work(session: ClientSession) -> McpError:
        for _ in range(2):
            assert not (await session.call_tool("echo", {"text": "x"})).isError
        with pytest.raises(McpError) as raised:
            await session.call_tool("echo", {"text": "x"})
        # Listing tools is no tool call: the quota does not apply to it.
        assert (await session.list_tools()).tools
        return raised.value

    error = mcp_gateway.session(GOVERNED, work, project="proj_quota").error
    assert error.code == -32003
    assert error.data["policy"]["reason_code"] == "PROJECT_QUOTA_EXCEEDED"
    assert error.data["policy"]["quota"]["project"][0]["unit"] == "tool_calls"
    outcomes = [e["outcome"] for e in mcp_gateway.tool_events(3)]
    assert outcomes == ["completed", "completed", "quota_exceeded"]


def test_the_policy_quota_block_limits_tool_calls_per_user(mcp_gateway: McpGateway) -> None:
    # `quota user { tool_calls 1 per day }`: the second call is refused; the policy's
    # `requests 1 per day` does not count tool calls, or the first would already be refused.
    async def work(session: ClientSession) -> McpError:
        assert not (await session.call_tool("echo", {"text": "x"})).isError
        with pytest.raises(McpError) as raised:
            await session.call_tool("echo", {"text": "x"})
        return raised.value

    error = mcp_gateway.session(GOVERNED, work, project="proj_policy_quota").error
    assert error.code == -32003
    assert error.data["policy"]["reason_code"] == "USER_QUOTA_EXCEEDED"
    (usage,) = error.data["policy"]["quota"]["user"]
    assert (usage["unit"], usage["limit"], usage["remaining"]) == ("tool_calls", 1, 0)
    outcomes = [e["outcome"] for e in mcp_gateway.tool_events(2)]
    assert outcomes == ["completed", "quota_exceeded"]


def test_shadow_target_passes_and_records_what_would_have_happened(
        mcp_gateway: McpGateway) -> None:
    async def work(session: ClientSession) -> Any:
        return await session.call_tool("run_shell", {"command": "rm -rf /tmp/scratch"})

    result = mcp_gateway.session(GOVERNED, work, headers={"x-policy-target": "agent-sandbox"})
    assert not result.isError and result.content[0].text == "ran: rm -rf /tmp/scratch"
    policy = result.meta["policy"]
    assert policy["decision"] == "refuse" and policy["effective_decision"] == "allow"
    assert policy["rollout_mode"] == "shadow" and policy["enforced"] is False
    (event,) = mcp_gateway.tool_events()
    assert event["decision"] == "refuse" and event["effective_decision"] == "allow"
    assert event["enforced"] is False and event["outcome"] == "completed"
    assert event["policy_target"] == "agent-sandbox"


def test_stored_events_hold_no_arguments_or_results(mcp_gateway: McpGateway) -> None:
    async def work(session: ClientSession) -> None:
        await session.call_tool("echo", {"text": "argument-canary-4711"})
        await session.call_tool("lookup_contact", {"name": "result-canary"})

    mcp_gateway.session(GOVERNED, work)
    assert len(mcp_gateway.tool_events(2)) == 2
    db = mcp_gateway.gateway.db_path
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        conn = sqlite3.connect(str(db))
        try:
            stored = conn.execute("SELECT count(*) FROM policy_events WHERE surface = 'mcp'"
                                  ).fetchone()[0]
        finally:
            conn.close()
        if stored == 2:
            break
        time.sleep(0.05)
    assert stored == 2
    for path in db.parent.glob(db.name + "*"):  # the database, its WAL and journal
        raw = path.read_bytes()
        for canary in (b"argument-canary-4711", b"result-canary", b"jane.doe@example.com"):
            assert canary not in raw, f"{canary!r} stored in {path.name}"


def test_jwt_user_names_the_project_and_is_the_quota_subject(mcp_gateway: McpGateway) -> None:
    token = jwt.encode({"sub": "agent-7", "org_id": mcp_gateway.gateway.account.id,
                        "aud": JWT_AUDIENCE, "projects": ["proj_tools"],
                        "exp": int(time.time() + 300)}, JWT_SECRET, algorithm="HS256")

    async def work(session: ClientSession) -> Any:
        return await session.call_tool("echo", {"text": "from a JWT user"})

    result = mcp_gateway.session(GOVERNED, work, key=token,
                                 headers={"x-policy-project": "proj_tools"})
    assert result.content[0].text == "from a JWT user"
    assert result.meta["policy"]["project_id"] == "proj_tools"
    (event,) = mcp_gateway.tool_events()
    assert event["user_id"] == "agent-7" and event["quota_subject"] == "agent-7"
    # A token without the grant gets no session.
    other = jwt.encode({"sub": "agent-8", "org_id": mcp_gateway.gateway.account.id,
                        "aud": JWT_AUDIENCE, "projects": ["proj_quota"],
                        "exp": int(time.time() + 300)}, JWT_SECRET, algorithm="HS256")
    response = httpx2.post(mcp_gateway.url + GOVERNED, headers={
        "authorization": f"Bearer {other}", "x-policy-project": "proj_tools",
        "accept": "application/json, text/event-stream"},
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status_code == 403
    assert response.json()["error"]["data"]["code"] == "project_forbidden"


def test_a_dead_quota_store_failing_closed_refuses_the_call_with_its_event(
        mcp_gateway: McpGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    # The shared quota store (Redis) does not answer and quotas fail closed: the store raises
    # QuotaUnavailable, as gateway/quota/redis.py does. The call goes nowhere, and is recorded.
    async def dead_store(request: Any) -> Any:
        raise QuotaUnavailable("The quota store did not answer; retry later.")

    monkeypatch.setattr(mcp_gateway.state.quotas, "admit", dead_store)

    async def work(session: ClientSession) -> McpError:
        with pytest.raises(McpError) as raised:
            await session.call_tool("echo", {"text": "x"})
        return raised.value

    error = mcp_gateway.session(GOVERNED, work, project="proj_quota").error
    assert error.data["policy"]["reason_code"] == "QUOTA_UNAVAILABLE"
    assert "did not answer" in error.message
    (event,) = mcp_gateway.tool_events()
    assert (event["outcome"], event["status"]) == ("quota_unavailable", 503)
