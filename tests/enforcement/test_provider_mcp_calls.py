"""Calls a provider runs on a remote MCP server (responses `mcp_call` items, from a client's
`{"type": "mcp", "server_label": ...}` tool), decided by tool rules with `tool.name` the item's
`name` and `tool.server` its `server_label` (sans-I/O): on whole answers, on streams (a refused
one ends the stream before any byte of its arguments), and in the `mcp` tool definitions'
`allowed_tools`."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

import dsl
from gateway.adapters import RESPONSES
from gateway.policy.governance import Governance
from gateway.policy.stream import StreamGovernor
from gateway.policy.toolcalls import ToolJudge, policy_refuses_tool, tool_definition_filter
from gateway.upstream.sse import SSEParser

JSON = dict[str, Any]
POLICY = dsl.compile_policy(r'''
policy v1 "provider_mcp" {
  default allow
  tools page_writes = ["delete_*", "edit_page"]
  rule no_wiki_writes {
    when tool.server == "wiki" and tool.name in page_writes
    then refuse reason WIKI_WRITE message "Agents do not change the wiki."
  }
  rule no_secrets_in_questions {
    when tool_arguments contains "Zqxw"
    then refuse reason SECRET_ARGUMENT
  }
}
''')
ARGUMENTS = '{"page": "Home", "text": "new text"}'
FACTS = dsl.RequestFacts(surface="responses", model="m", stream=True, input_text="hi")


def mcp_item(name: str, server: str | None, arguments: str, **more: Any) -> JSON:
    item = {"type": "mcp_call", "id": "mcp_1", "name": name, "arguments": arguments,
            "status": "completed", **more}
    if server is not None:
        item["server_label"] = server
    return item


def whole(name: str, server: str | None, arguments: str = ARGUMENTS) -> JSON:
    return {"id": "resp_1", "object": "response", "status": "completed", "output": [
        mcp_item(name, server, arguments, output="done"),
        {"type": "message", "id": "msg_1", "role": "assistant",
         "content": [{"type": "output_text", "text": "Edited.", "annotations": []}]}]}


def verdicts_of(answer: JSON) -> list[tuple[str, str | None, str, bool]]:
    judge, found = ToolJudge([POLICY], FACTS, enforced=True), []

    def decide(name: str, arguments: str, server: str | None = None) -> str:
        verdict = judge.decide(name, arguments, server)
        found.append((name, server, verdict.decision.decision, verdict.stopped))
        return verdict.arguments

    assert RESPONSES.map_tool_calls(answer, decide) == answer
    return found


def test_a_whole_answer_decides_the_call_with_its_server() -> None:
    assert verdicts_of(whole("edit_page", "wiki")) == [("edit_page", "wiki", "refuse", True)]
    # The same tool on another server is another tool.
    assert verdicts_of(whole("edit_page", "docs")) == [("edit_page", "docs", "allow", False)]
    # A broken upstream's item without a label is still an MCP call, on no known server.
    assert verdicts_of(whole("edit_page", None)) == [("edit_page", "", "allow", False)]
    assert verdicts_of(whole("ask", "wiki", '{"q": "Zqxw"}')) == [
        ("ask", "wiki", "refuse", True)]


def sse(events: list[JSON]) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(
        {**e, "sequence_number": n}) + b"\n\n" for n, e in enumerate(events))


def stream_events(name: str, server: str, pieces: list[str]) -> list[JSON]:
    arguments = "".join(pieces)
    started = mcp_item(name, server, "", status="in_progress")
    done = mcp_item(name, server, arguments, output="done")
    shell = {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}
    return [
        {"type": "response.created", "response": shell},
        {"type": "response.output_item.added", "output_index": 0, "item": started},
        *({"type": "response.mcp_call_arguments.delta", "output_index": 0, "item_id": "mcp_1",
           "delta": piece} for piece in pieces),
        {"type": "response.mcp_call_arguments.done", "output_index": 0, "item_id": "mcp_1",
         "arguments": arguments},
        {"type": "response.mcp_call.completed", "output_index": 0, "item_id": "mcp_1"},
        {"type": "response.output_item.done", "output_index": 0, "item": done},
        {"type": "response.completed", "response": {
            **shell, "status": "completed", "output": [done],
            "usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}}},
    ]


def run_stream(name: str, server: str, pieces: list[str],
               enforced: bool = True) -> tuple[bytes, StreamGovernor]:
    governance = Governance(
        policy_id="provider_mcp", policy_revision=1, policy_name="p",
        data_classification="internal", project_id="proj_x", project_label="X",
        account_id="acct_x", user_id="key:k", policy_target="responses", policy_user=None,
        quota_subject="key:k", surface="responses", model="m", stream=True,
        decision=dsl.Decision(), enforced=enforced,
        rollout_mode="enforced" if enforced else "shadow")
    gov = StreamGovernor(RESPONSES, governance, None,
                         tool_judge=ToolJudge([POLICY], FACTS, enforced=enforced))
    out = b""
    for frame in SSEParser().feed(sse(stream_events(name, server, pieces))):
        out += gov.feed(frame, orjson.loads(frame.data or ""))
    return out + gov.finish(), gov


def sent_events(out: bytes) -> list[JSON]:
    return [orjson.loads(f.data or "") for f in SSEParser().feed(out)]


PIECES = ['{"page": "Qzv', 'Home", "text": "Qzv new', ' text"}']


def test_a_refused_streamed_call_ends_the_stream_before_its_arguments() -> None:
    out, gov = run_stream("edit_page", "wiki", PIECES)
    assert gov.stopped and b"Qzv" not in out
    policy = gov.governance.policy_object()
    assert (policy["decision"], policy["reason_code"]) == ("refuse", "WIKI_WRITE")
    assert policy["tool_calls"][0]["name"] == "edit_page"
    assert sent_events(out)[-1]["type"] in ("error", "response.failed")


def test_an_allowed_streamed_call_reaches_the_client_whole() -> None:
    out, gov = run_stream("edit_page", "docs", PIECES)
    assert not gov.stopped
    events = sent_events(out)
    deltas = [e["delta"] for e in events if e["type"] == "response.mcp_call_arguments.delta"]
    assert "".join(deltas) == "".join(PIECES)
    assert events[-1]["type"] == "response.completed"
    assert [c["decision"] for c in events[-1]["policy"]["tool_calls"]] == ["allow"]


def test_in_shadow_a_refused_streamed_call_passes_and_is_recorded() -> None:
    out, gov = run_stream("edit_page", "wiki", PIECES, enforced=False)
    assert not gov.stopped and b"Qzv new" in out
    assert gov.governance.policy_object()["tool_calls"][0]["decision"] == "refuse"


def test_a_call_renamed_to_another_server_ends_an_enforced_stream() -> None:
    events = stream_events("edit_page", "docs", PIECES)
    events.insert(2, {"type": "response.output_item.added", "output_index": 0,
                      "item": mcp_item("edit_page", "wiki", "", status="in_progress")})
    governance = Governance(
        policy_id="provider_mcp", policy_revision=1, policy_name="p",
        data_classification="internal", project_id="proj_x", project_label="X",
        account_id="acct_x", user_id="key:k", policy_target="responses", policy_user=None,
        quota_subject="key:k", surface="responses", model="m", stream=True,
        decision=dsl.Decision(), enforced=True, rollout_mode="enforced")
    gov = StreamGovernor(RESPONSES, governance, None,
                         tool_judge=ToolJudge([POLICY], FACTS, enforced=True))
    out = b"".join(gov.feed(f, orjson.loads(f.data or "")) for f in SSEParser().feed(sse(events)))
    assert gov.stopped and b"Qzv" not in out


@pytest.mark.parametrize(("tools", "left", "removed"), [
    ([{"type": "mcp", "server_label": "wiki", "server_url": "https://wiki.example/mcp",
       "allowed_tools": ["read_page", "edit_page", "delete_page"]}],
     [{"type": "mcp", "server_label": "wiki", "server_url": "https://wiki.example/mcp",
       "allowed_tools": ["read_page"]}], ["edit_page", "delete_page"]),
    ([{"type": "mcp", "server_label": "wiki",
       "allowed_tools": {"tool_names": ["read_page", "edit_page"], "read_only": False}}],
     [{"type": "mcp", "server_label": "wiki",
       "allowed_tools": {"tool_names": ["read_page"], "read_only": False}}], ["edit_page"]),
    # Another server's tools of the same names stay; a definition without allowed_tools too.
    ([{"type": "mcp", "server_label": "docs", "allowed_tools": ["edit_page"]},
      {"type": "mcp", "server_label": "wiki"}],
     [{"type": "mcp", "server_label": "docs", "allowed_tools": ["edit_page"]},
      {"type": "mcp", "server_label": "wiki"}], []),
    ([{"type": "mcp", "server_label": "wiki", "allowed_tools": ["edit_page"]},
      {"type": "web_search"}], [{"type": "web_search"}], ["edit_page"]),
], ids=["list", "object", "other-server", "emptied"])
def test_mcp_definitions_lose_the_tools_the_policy_always_refuses(
        tools: list[JSON], left: list[JSON], removed: list[str]) -> None:
    body = {"model": "m", "input": "hi", "tools": tools, "tool_choice": "auto"}
    kept, gone = RESPONSES.without_tools(body, tool_definition_filter([POLICY], FACTS))
    assert gone == removed
    assert kept == {**body, "tools": left}


def test_an_mcp_definition_left_with_no_tool_takes_tool_choice_with_it() -> None:
    body = {"model": "m", "input": "hi", "tool_choice": "required", "parallel_tool_calls": True,
            "tools": [{"type": "mcp", "server_label": "wiki",
                       "allowed_tools": ["edit_page", "delete_all"]}]}
    kept, gone = RESPONSES.without_tools(body, tool_definition_filter([POLICY], FACTS))
    assert kept == {"model": "m", "input": "hi"} and gone == ["edit_page", "delete_all"]
    assert policy_refuses_tool([POLICY], FACTS, "edit_page", "wiki")
    assert not policy_refuses_tool([POLICY], FACTS, "edit_page")
