"""What a remote MCP tool the provider ran returned (responses `mcp_call` `output` / `error`),
what the server listed (`mcp_list_tools`), and the approvals the provider asks for
(`mcp_approval_request`), decided by the policy (sans-I/O), the way a hostile upstream would
try to slip them past it: the forbidden text in look-alike letters or JSON escapes, in a
structured `error`, only in `output_item.done` or only in a snapshot, an item with missing
fields, a huge output; on whole answers and on streams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

import dsl
from gateway.adapters import RESPONSES
from gateway.errors import UpstreamUnavailable
from gateway.policy.decide import output_monitor_factory
from gateway.policy.governance import Governance
from gateway.policy.json_strings import MAX_JSON_DEPTH
from gateway.policy.provider_tools import ProviderTools
from gateway.policy.stream import StreamGovernor
from gateway.policy.toolcalls import ToolJudge
from gateway.upstream.sse import SSEParser

JSON = dict[str, Any]
#: The security tests' policy (tests/security/test_attack_provider_mcp.py), end to end there.
POLICY = dsl.compile_policy(
    (Path(__file__).resolve().parents[1] / "data" / "provider_tools.pol").read_text())
FACTS = dsl.RequestFacts(surface="responses", model="m", stream=True, input_text="hi")
SECRET = "the launch code is 0000"


def governance(enforced: bool = True) -> Governance:
    return Governance(
        policy_id="provider_tools", policy_revision=1, policy_name="p",
        data_classification="internal", project_id="proj_x", project_label="X",
        account_id="acct_x", user_id="key:k", policy_target="responses", policy_user=None,
        quota_subject="key:k", surface="responses", model="m", stream=True,
        decision=dsl.Decision(), enforced=enforced,
        rollout_mode="enforced" if enforced else "shadow")


def mcp_call(output: Any = None, *, name: str = "read_page", server: str | None = "wiki",
             **more: Any) -> JSON:
    item: JSON = {"type": "mcp_call", "id": "mcp_1", "name": name,
                  "arguments": '{"page": "Home"}', "status": "completed", **more}
    if output is not None:
        item["output"] = output
    if server is not None:
        item["server_label"] = server
    return item


def listing(*names: Any, server: str = "wiki") -> JSON:
    return {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": server,
            "tools": [{"name": n, "input_schema": {}} if isinstance(n, str) else n
                      for n in names]}


def answer(*items: JSON) -> JSON:
    return {"id": "resp_1", "object": "response", "status": "completed", "output": [
        *items, {"type": "message", "id": "msg_1", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Done.", "annotations": []}]}]}


def whole(payload: JSON, enforced: bool = True) -> tuple[JSON, ProviderTools, Governance]:
    gov = governance(enforced)
    run = ProviderTools(ToolJudge([POLICY], FACTS, enforced=enforced), gov)
    return RESPONSES.map_provider_tools(payload, run), run, gov


# --- whole answers ----------------------------------------------------------------------------


@pytest.mark.parametrize("output", [
    SECRET,
    "the LAUNCH   CODE is 0000",
    "the l\u0430unch c\u043ede is 0000",  # Cyrillic a and o
    "the " + "".join(chr(ord(c) + 0xFEE0) if c != " " else c for c in "launch code") + " is 0000",  # full-width
    "the laun\u200bch code is 0000",  # a zero-width space inside the word
    '{"note": "the l\\u0061unch code"}',  # spelled with JSON escapes
    "x" * 300_000 + " launch code " + "y" * 300_000,  # buried in a huge output
])
def test_a_forbidden_tool_output_refuses_the_answer(output: str) -> None:
    _, run, gov = whole(answer(mcp_call(output)))
    assert run.stopped
    assert (gov.decision.decision, gov.decision.reason_code) == ("refuse", "SECRET_OUTPUT")
    assert gov.decision.obligations.message == "Secrets stay secret."


@pytest.mark.parametrize("error", [
    SECRET,
    {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": SECRET}]},
    {"type": "http_error", "code": 500, "message": SECRET},
    {"type": "mcp_protocol_error", "code": -32000, SECRET: "in a key"},
])
def test_a_forbidden_error_instead_of_output_refuses_the_answer(error: Any) -> None:
    _, run, gov = whole(answer(mcp_call(error=error)))
    assert run.stopped and gov.decision.reason_code == "SECRET_OUTPUT"


def test_a_forbidden_text_split_between_output_and_error_is_read_as_one_result() -> None:
    _, run, _ = whole(answer(mcp_call("the launch", error="code is 0000")))
    assert run.stopped


def test_tool_result_rules_read_the_result_with_the_calls_server() -> None:
    _, run, gov = whole(answer(mcp_call("page Zqxw private")))
    assert run.stopped and gov.decision.reason_code == "PRIVATE_RESULT"
    # The same result of the same tool on another server is another tool's.
    mapped, run, gov = whole(answer(mcp_call("page Zqxw private", server="docs")))
    assert not run.stopped and gov.decision.decision == "allow"
    assert mapped["output"][0]["output"] == "page Zqxw private"


def test_a_redaction_rewrites_every_string_of_the_result() -> None:
    error = {"type": "mcp_tool_execution_error",
             "content": [{"type": "text", "text": "ask bob@example.com"}]}
    mapped, run, gov = whole(answer(mcp_call("mail ann@example.com please", error=error)))
    item = mapped["output"][0]
    assert not run.stopped
    assert "ann@example.com" not in item["output"] and item["output"].startswith("mail ")
    assert "bob@example.com" not in orjson.dumps(item["error"]).decode()
    assert item["error"]["type"] == "mcp_tool_execution_error"
    assert gov.decision.redacted_spans and gov.decision.stage == "output"


def test_in_shadow_the_result_goes_out_as_written_and_the_verdict_is_recorded() -> None:
    payload = answer(mcp_call(SECRET), listing("edit_page"))
    mapped, run, gov = whole(payload, enforced=False)
    assert mapped is payload and not run.stopped
    assert (gov.decision.decision, gov.decision.reason_code) == ("refuse", "SECRET_OUTPUT")


@pytest.mark.parametrize("item", [
    {"type": "mcp_call"},  # no name, arguments, server nor result
    {"type": "mcp_call", "output": None, "error": None},
    {"type": "mcp_call", "name": 7, "arguments": ["x"], "output": "fine"},
    {"type": "mcp_list_tools"},
    {"type": "mcp_list_tools", "tools": "not a list"},
    "not an item",
])
def test_items_with_missing_or_mistyped_fields_are_decided_not_crashed_on(item: Any) -> None:
    payload = {"output": [item]}
    mapped, run, _ = whole(payload)
    assert mapped == payload and not run.stopped


def test_an_item_without_a_name_or_server_is_still_read() -> None:
    _, run, _ = whole({"output": [{"type": "mcp_call", "output": SECRET}]})
    assert run.stopped


def test_an_error_nested_as_deep_as_it_can_be_sent_on_is_redacted() -> None:
    error: Any = "reach ann@example.com"
    for _ in range(MAX_JSON_DEPTH - 2):  # the item and its error are two levels more
        error = [error]
    mapped, run, _ = whole({"output": [mcp_call(error=error)]})
    assert not run.stopped and "ann@example.com" not in orjson.dumps(mapped).decode()


@pytest.mark.parametrize("place", ["error", "output", "listing", "approval"])
def test_an_item_nested_deeper_than_can_be_sent_on_is_the_upstreams_error(place: str) -> None:
    deep: Any = "reach ann@example.com"
    for _ in range(1000):  # orjson decodes 1024 levels, and writes only 254
        deep = [deep]
    item = {"error": mcp_call(error=deep), "output": mcp_call(output=deep),
            "listing": listing("read_page", {"name": "x", "input_schema": deep}),
            "approval": {"type": "mcp_approval_request", "name": "read_page",
                         "arguments": "{}", "server_label": "wiki", "extra": deep}}[place]
    with pytest.raises(UpstreamUnavailable, match="nested more than"):
        whole({"output": [item]})


@pytest.mark.parametrize("where", ["error", "output"])
def test_keys_a_redaction_makes_equal_keep_every_entry(where: str) -> None:
    held = {"alice@example.com": "owner", "bob@example.com": "editor"}
    value = {"type": "mcp_tool_execution_error", "content": held} if where == "error" else held
    mapped, run, _ = whole(answer(mcp_call(**{where: value})))
    result = mapped["output"][0][where]
    entries = result["content"] if where == "error" else result
    assert not run.stopped and "example.com" not in orjson.dumps(mapped).decode()
    assert sorted(entries.values()) == ["editor", "owner"]
    assert len(entries) == 2 and all(key.startswith("[REDACTED:EMAIL]") for key in entries)


def test_tools_always_refused_are_taken_out_of_a_listing() -> None:
    payload = answer(listing("read_page", "edit_page", "Delete_Everything", "d\u0435lete_x",
                             {"description": "no name"}, {"name": ["edit_page"]}))
    mapped, _, gov = whole(payload)
    assert [t["name"] for t in mapped["output"][0]["tools"]] == ["read_page"]
    assert gov.tools_removed == ("edit_page", "Delete_Everything", "d\u0435lete_x")
    # The same tools on another server are not refused.
    other = answer(listing("read_page", "edit_page", server="docs"))
    assert whole(other)[0] is other


def test_in_shadow_a_listing_goes_out_as_listed() -> None:
    # Nothing is taken out of what the client gets in shadow, nameless entries included.
    payload = answer(listing("read_page", "edit_page", {"description": "no name"}))
    assert whole(payload, enforced=False)[0] is payload


def test_a_huge_listing_is_cut_not_read_for_ever() -> None:
    names = [f"tool_{n}" for n in range(5000)]
    mapped, _, gov = whole(answer(listing(*names)))
    assert len(mapped["output"][0]["tools"]) == 1024
    assert gov.tools_removed == ()  # cut, not refused by a rule


def test_a_refused_approval_request_refuses_the_answer() -> None:
    judge, found = ToolJudge([POLICY], FACTS, enforced=True), []
    approval = {"type": "mcp_approval_request", "id": "mcpr_1", "name": "edit_page",
                "arguments": '{"page": "Home"}', "server_label": "wiki"}

    def decide(name: str, arguments: str, server: str | None = None) -> str:
        verdict = judge.decide(name, arguments, server)
        found.append((name, server, verdict.stopped))
        return verdict.arguments

    RESPONSES.map_tool_calls(answer(approval), decide)
    RESPONSES.map_tool_calls(answer({**approval, "server_label": "docs"}), decide)
    assert found == [("edit_page", "wiki", True), ("edit_page", "docs", False)]


# --- streams ----------------------------------------------------------------------------------


def sse(events: list[JSON]) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(
        {**e, "sequence_number": n}) + b"\n\n" for n, e in enumerate(events))


def call_events(done: JSON, *, added: JSON | None = None, in_snapshot: JSON | None = None
                ) -> list[JSON]:
    """A stream whose mcp_call carries its result only in `output_item.done` (as OpenAI's do),
    then model text, then the `response.completed` snapshot repeating the items."""
    started = added or mcp_call(status="in_progress", arguments="")
    shell = {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}
    return [
        {"type": "response.created", "response": shell},
        {"type": "response.output_item.added", "output_index": 0, "item": started},
        {"type": "response.mcp_call_arguments.delta", "output_index": 0, "item_id": "mcp_1",
         "delta": '{"page": "Home"}'},
        {"type": "response.mcp_call_arguments.done", "output_index": 0, "item_id": "mcp_1",
         "arguments": '{"page": "Home"}'},
        {"type": "response.mcp_call.completed", "output_index": 0, "item_id": "mcp_1"},
        {"type": "response.output_item.done", "output_index": 0, "item": done},
        {"type": "response.output_text.delta", "output_index": 1, "content_index": 0,
         "item_id": "msg_1", "delta": "Read it."},
        {"type": "response.completed", "response": {
            **shell, "status": "completed", "output": [in_snapshot or done],
            "usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}}},
    ]


def run_stream(events: list[JSON], enforced: bool = True) -> tuple[list[JSON], StreamGovernor]:
    gov = StreamGovernor(RESPONSES, governance(enforced),
                         output_monitor_factory([POLICY], FACTS, enforced),
                         tool_judge=ToolJudge([POLICY], FACTS, enforced=enforced))
    out = b""
    for frame in SSEParser().feed(sse(events)):
        out += gov.feed(frame, orjson.loads(frame.data or ""))
    out += gov.finish()
    return [orjson.loads(f.data or "") for f in SSEParser().feed(out)], gov


def test_a_streamed_forbidden_output_ends_the_stream_before_its_frame() -> None:
    sent, gov = run_stream(call_events(mcp_call("the l\u0430unch code is 0000")))
    assert gov.stopped and "0000" not in orjson.dumps(sent).decode()
    assert sent[-1]["type"] == "error" and sent[-1]["code"] == "policy_refused"
    assert sent[-1]["error"]["policy"]["reason_code"] == "SECRET_OUTPUT"
    numbers = [e["sequence_number"] for e in sent]
    assert numbers == list(range(len(sent)))


def test_a_result_only_in_the_completed_snapshot_is_decided() -> None:
    sent, gov = run_stream(call_events(mcp_call(), in_snapshot=mcp_call(SECRET)))
    assert gov.stopped and "0000" not in orjson.dumps(sent).decode()


def test_a_result_already_in_the_added_item_is_decided_before_it_goes_out() -> None:
    sent, gov = run_stream(call_events(mcp_call(), added=mcp_call(SECRET, status="calling", arguments="")))
    assert gov.stopped and "0000" not in orjson.dumps(sent).decode()
    assert [e["type"] for e in sent] == ["response.created", "error"]


def test_a_streamed_redaction_reaches_every_repetition_of_the_result() -> None:
    sent, gov = run_stream(call_events(mcp_call("write to ann@example.com")))
    text = orjson.dumps(sent).decode()
    assert not gov.stopped and "ann@example.com" not in text
    [done] = [e for e in sent if e["type"] == "response.output_item.done"]
    [completed] = [e for e in sent if e["type"] == "response.completed"]
    assert done["item"]["output"] == completed["response"]["output"][0]["output"]
    assert done["item"]["output"].startswith("write to ")
    assert completed["policy"]["redacted_spans"]


def test_a_streamed_listing_loses_the_refused_tools_in_every_frame() -> None:
    items = listing("read_page", "edit_page")
    shell = {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}
    sent, gov = run_stream([
        {"type": "response.created", "response": shell},
        {"type": "response.output_item.added", "output_index": 0, "item": {**items, "tools": []}},
        {"type": "response.mcp_list_tools.completed", "output_index": 0, "item_id": "mcpl_1"},
        {"type": "response.output_item.done", "output_index": 0, "item": items},
        {"type": "response.completed", "response": {**shell, "status": "completed",
                                                    "output": [items]}}])
    assert not gov.stopped and "edit_page" not in orjson.dumps(
        [{k: v for k, v in e.items() if k != "policy"} for e in sent]).decode()
    assert sent[-1]["policy"]["tools_removed"] == ["edit_page"]


def test_a_streamed_refused_approval_request_never_reaches_the_client() -> None:
    approval = {"type": "mcp_approval_request", "id": "mcpr_1", "name": "edit_page",
                "arguments": '{"page": "Home"}', "server_label": "wiki"}
    shell = {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}
    for first in ({"type": "response.output_item.added", "output_index": 0, "item": approval},
                  {"type": "response.output_item.done", "output_index": 0, "item": approval},
                  {"type": "response.completed", "response": {**shell, "output": [approval]}}):
        sent, gov = run_stream([{"type": "response.created", "response": shell}, first])
        assert gov.stopped and "mcpr_1" not in orjson.dumps(sent).decode()
        assert gov.governance.decision.reason_code == "WIKI_WRITE"


def feed_raw(data: list[str]) -> tuple[list[JSON], StreamGovernor]:
    """`run_stream` for frames written as text: orjson decodes 1024 levels but writes only
    254, so a hostile upstream's deepest frames cannot be built as values."""
    gov = StreamGovernor(RESPONSES, governance(), output_monitor_factory([POLICY], FACTS, True),
                         tool_judge=ToolJudge([POLICY], FACTS, enforced=True))
    raw = b"".join(b"data: " + text.encode() + b"\n\n" for text in data)
    out = b"".join(gov.feed(frame, orjson.loads(frame.data or ""))
                   for frame in SSEParser().feed(raw)) + gov.finish()
    return [orjson.loads(f.data or "") for f in SSEParser().feed(out)], gov


def test_a_snapshot_nested_in_snapshots_is_relayed_not_walked() -> None:
    nested = '{"output":[]}'
    for _ in range(1000):  # a `response` in each `response`, as deep as orjson decodes
        nested = '{"output":[],"response":' + nested + '}'
    sent, gov = feed_raw(['{"type":"response.in_progress","response":' + nested + '}'])
    assert not gov.stopped and [frame["type"] for frame in sent] == ["response.in_progress"]
    assert "policy" in sent[0]


@pytest.mark.parametrize("place", ["item", "snapshot"])
def test_a_streamed_item_nested_too_deep_is_the_upstreams_error(place: str) -> None:
    item = ('{"type":"mcp_call","id":"mcp_1","name":"read_page","server_label":"wiki",'
            '"arguments":"{}","error":' + "[" * 1000 + '"x"' + "]" * 1000 + "}")
    frame = ('{"type":"response.output_item.done","output_index":0,"item":' + item + "}"
             if place == "item" else
             '{"type":"response.completed","response":{"output":[' + item + "]}}")
    with pytest.raises(UpstreamUnavailable, match="nested more than"):
        feed_raw([frame])


def test_an_allowed_result_streams_unchanged() -> None:
    events = call_events(mcp_call("Home page text"))
    sent, gov = run_stream(events)
    assert not gov.stopped
    texts = [e.pop("delta") for e in sent if e["type"] == "response.output_text.delta"]
    assert "".join(texts) == "Read it."  # held back in part, as any model text is

    def items(frames: list[JSON]) -> list[JSON]:
        return [{k: v for k, v in e.items() if k not in ("policy", "sequence_number")}
                for e in frames if e["type"] != "response.output_text.delta"]

    assert items(sent) == items(events)


def test_a_shadow_verdict_on_a_result_is_kept_while_a_text_block_is_open() -> None:
    """A hostile order: the result arrives while the model's text streams; the text's own
    verdict, made later, must not erase the result's from the record."""
    shell = {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}
    text = {"type": "response.output_text.delta", "output_index": 0, "content_index": 0,
            "item_id": "msg_1"}
    sent, gov = run_stream([
        {"type": "response.created", "response": shell},
        {**text, "delta": "Mail ann@"},
        {"type": "response.output_item.added", "output_index": 1, "item": mcp_call(SECRET)},
        {**text, "delta": "example.com now."},
        {"type": "response.completed", "response": {**shell, "status": "completed"}}],
        enforced=False)
    decision = gov.governance.decision
    assert not gov.stopped and SECRET in orjson.dumps(sent).decode()
    assert (decision.decision, decision.reason_code) == ("refuse", "SECRET_OUTPUT")
    assert "redact_emails" in decision.fired_rules


APPROVAL = {"type": "mcp_approval_request", "id": "mcpr_1", "name": "send_note",
            "server_label": "wiki"}


def test_approval_arguments_are_read_by_output_rules_in_every_frame() -> None:
    shell = {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}
    redact = {**APPROVAL, "arguments": '{"to": "ann@example.com", "n": 1}'}
    frames = [{"type": "response.created", "response": shell},
              {"type": "response.output_item.added", "output_index": 0, "item": redact},
              {"type": "response.output_item.done", "output_index": 0, "item": redact},
              {"type": "response.completed", "response": {**shell, "output": [redact]}}]
    sent, gov = run_stream(frames)
    assert not gov.stopped and "ann@example.com" not in orjson.dumps(sent).decode()
    arguments = [orjson.loads(e.get("item", e.get("response", {}).get("output", [{}])[0])[
        "arguments"]) for e in sent[1:]]
    assert all(a["n"] == 1 and a["to"] != "ann@example.com" for a in arguments)
    refused = {**APPROVAL, "arguments": '{"note": "the launch code is 0000"}'}
    sent, gov = run_stream([frames[0], {**frames[1], "item": refused}])
    assert gov.stopped and "0000" not in orjson.dumps(sent).decode()
    # And in a whole answer.
    _, run, gov = whole(answer(refused))
    assert run.stopped and gov.decision.reason_code == "SECRET_OUTPUT"


def test_results_and_listings_riding_on_a_delta_frame_are_read_before_it_goes_out() -> None:
    # A hostile upstream puts a result and a listing in a frame that also carries an argument
    # delta: the delta is held for the tool rules, and the rest must not go out unread.
    shell = {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}
    riding = {"output": [mcp_call(SECRET), listing("edit_page", "read_page")]}
    frames = [
        {"type": "response.created", "response": shell},
        {"type": "response.output_item.added", "output_index": 0,
         "item": mcp_call(None, status="in_progress", arguments="")},
        {"type": "response.mcp_call_arguments.delta", "output_index": 0, "item_id": "mcp_1",
         "delta": '{"page": "Home"}', "response": riding},
        {"type": "response.mcp_call_arguments.done", "output_index": 0, "item_id": "mcp_1",
         "arguments": '{"page": "Home"}'}]
    sent, gov = run_stream(frames)
    assert gov.stopped and "0000" not in orjson.dumps(sent).decode()
    assert gov.governance.decision.reason_code == "SECRET_OUTPUT"
    # Without the secret the frame goes out with the listing filtered.
    riding = {"output": [listing("edit_page", "read_page")]}
    sent, gov = run_stream([*frames[:2], {**frames[2], "response": riding}, frames[3]])
    listed = [tool["name"] for frame in sent for item in frame.get("response", {}).get(
        "output", []) if item.get("type") == "mcp_list_tools" for tool in item["tools"]]
    assert not gov.stopped and listed == ["read_page"]


def test_a_call_named_on_one_server_and_finished_on_another_is_decided_on_both() -> None:
    # Announced on `notes` (allowed), repeated whole on `wiki` (refused): the repeat is decided.
    args = '{"page": "Home"}'
    shell = {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}
    done = mcp_call("ok", name="edit_page", server="wiki")
    frames = [
        {"type": "response.created", "response": shell},
        {"type": "response.output_item.added", "output_index": 0,
         "item": mcp_call(None, name="edit_page", server="notes", status="in_progress",
                          arguments="")},
        {"type": "response.mcp_call_arguments.delta", "output_index": 0, "item_id": "mcp_1",
         "delta": args},
        {"type": "response.mcp_call_arguments.done", "output_index": 0, "item_id": "mcp_1",
         "arguments": args},
        {"type": "response.output_item.done", "output_index": 0, "item": done}]
    sent, gov = run_stream(frames)
    assert gov.stopped and gov.governance.decision.reason_code == "WIKI_WRITE"
    assert all((f.get("item") or {}).get("server_label") != "wiki" for f in sent)
