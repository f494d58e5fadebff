"""Tool rules decide the tool calls models issue (sans-I/O): on streams (`StreamGovernor` with a
`ToolJudge`) and on whole answers (`Adapter.map_tool_calls`), for each API.

The policy has no output rules: tool calls are held for their verdict all the same, a refused
call ends the stream before any byte of its arguments, an allowed call's arguments reach the
client whole, and a redaction keeps them valid JSON. Rules use the `input` convention (the tool
name on its first line, then the arguments) and the `tool_arguments` text.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dsl
from gateway.adapters import CHAT, MESSAGES, RESPONSES
from gateway.errors import InvalidRequest
from gateway.policy.decide import decide_input
from gateway.policy.governance import Governance
from gateway.policy.stream import StreamGovernor
from gateway.policy.toolcalls import (
    MAX_TOOL_DEFINITIONS,
    ToolJudge,
    policy_refuses_tool,
    tool_call_facts,
    tool_definition_filter,
)
from gateway.upstream import echo
from gateway.upstream.sse import Frame, SSEParser
from tests.core.test_stream_governor import OUTPUT_GUARD

from .frames import without_policy_objects

JSON = dict[str, Any]
TOOL_POLICY = dsl.compile_policy(r'''
policy v1 "model_tools" {
  name "Model tool calls"
  classification "internal"
  default allow
  on_error refuse
  denylist destructive = ["rm -rf", "drop table"]
  rule no_destructive_tool_calls {
    when tool_arguments contains any of destructive
    then refuse reason DESTRUCTIVE_TOOL_CALL message "That tool call was not allowed."
  }
  tools deletion_tools = ["delete_*"]
  rule no_deletions {
    when tool.name in deletion_tools
    then refuse reason DELETION_TOOL
  }
  rule redact_phones {
    when pii phone
    then allow
    redact pii phone
  }
}
''')
FRAMES = {"chat.completions": echo.chat_completion_frames, "messages": echo.message_frames,
          "responses": echo.response_frames}
WHOLE = {"chat.completions": echo.chat_completion, "messages": echo.message,
         "responses": echo.response}
ADAPTERS = {"chat.completions": CHAT, "messages": MESSAGES, "responses": RESPONSES}
by_surface = pytest.mark.parametrize("surface", list(ADAPTERS))
#: Every fragment of these is recognisable in the client's bytes (`Zq` marks them).
FORBIDDEN = '{"command": "Zqxw rm -rf /srv/Zqxw", "cwd": "Zqxw/home Zqxw"}'
SAFE = '{"city": "Oslo", "units": "metric"}'


def reply(calls: tuple[tuple[str, tuple[str, ...]], ...]) -> echo.Reply:
    return echo.Reply(chunks=("Let me see.",), input_tokens=9, output_tokens=5, key="k1",
                      created=1_700_000_000, tool_calls=calls)


def governance(surface: str, enforced: bool) -> Governance:
    return Governance(
        policy_id="model_tools", policy_revision=1, policy_name="Model tool calls",
        data_classification="internal", project_id="proj_x", project_label="X",
        account_id="acct_x", user_id="key:k", policy_target=surface, policy_user=None,
        quota_subject="key:k", surface=surface, model="m", stream=True,
        decision=dsl.Decision(), enforced=enforced,
        rollout_mode="enforced" if enforced else "shadow")


def judge(surface: str, enforced: bool = True) -> ToolJudge:
    facts = dsl.RequestFacts(surface=surface, model="m", stream=True, input_text="hello")
    return ToolJudge([TOOL_POLICY], facts, enforced=enforced)


def stream(surface: str, calls: tuple[tuple[str, tuple[str, ...]], ...],
           enforced: bool = True) -> tuple[bytes, StreamGovernor]:
    raw = b"".join(FRAMES[surface]({"model": "m", "stream_options": {"include_usage": True}},
                                   reply(calls)))
    gov = StreamGovernor(ADAPTERS[surface], governance(surface, enforced), None,
                         tool_judge=judge(surface, enforced))
    out = b""
    for frame in SSEParser().feed(raw):
        payload = None if frame.data == "[DONE]" else orjson.loads(frame.data or "")
        out += gov.feed(frame, payload)
    return out + gov.finish(), gov


def payloads(out: bytes) -> list[JSON]:
    frames: list[Frame] = SSEParser().feed(out)
    return [orjson.loads(f.data or "") for f in frames if f.data != "[DONE]"]


def arguments_sent(surface: str, out: bytes) -> str:
    adapter = ADAPTERS[surface]
    deltas = [adapter.output_delta(p.get("type"), p) for p in payloads(out)]
    return "".join(d.text for d in deltas if d is not None and d.held)


@settings(max_examples=60, deadline=None)
@given(surface=st.sampled_from(list(ADAPTERS)),
       cuts=st.lists(st.integers(1, len(FORBIDDEN) - 1), max_size=8, unique=True))
def test_a_refused_tool_call_never_reaches_the_client_under_any_chunking(
        surface: str, cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(FORBIDDEN)]
    pieces = tuple(FORBIDDEN[a:b] for a, b in itertools.pairwise(bounds))
    out, gov = stream(surface, (("get_weather", (SAFE,)), ("run_shell", pieces)))
    assert gov.stopped
    # No fragment of the arguments (the `policy` object names the denylisted term it found).
    assert b"Zqxw" not in out and b"/srv" not in out and b"command" not in out
    assert b"rm -rf" not in orjson.dumps(without_policy_objects(payloads(out)))
    policy = gov.governance.policy_object()
    assert policy["decision"] == "refuse" and policy["reason_code"] == "DESTRUCTIVE_TOOL_CALL"
    assert [(c["name"], c["decision"]) for c in policy["tool_calls"]] == [
        ("get_weather", "allow"), ("run_shell", "refuse")]
    # The allowed call before it went out whole; the stream ends with the API's refusal.
    assert arguments_sent(surface, out) == SAFE
    assert b"content_filter" in out or b"policy_refused" in out or b"response.failed" in out


@by_surface
def test_a_tool_refused_by_its_name_ends_the_stream(surface: str) -> None:
    out, gov = stream(surface, (("delete_repository", ('{"name": "Zqxw"}',)),))
    assert gov.stopped and gov.governance.decision.reason_code == "DELETION_TOOL"
    assert b"Zqxw" not in out


@by_surface
def test_an_allowed_tool_call_reaches_the_client_whole(surface: str) -> None:
    out, gov = stream(surface, (("get_weather", (SAFE[:7], SAFE[7:20], SAFE[20:])),))
    assert not gov.stopped
    assert arguments_sent(surface, out) == SAFE
    assert payloads(out)[-1]["policy"]["tool_calls"] == [
        {"name": "get_weather", "decision": "allow", "reason_code": "ALLOW", "fired_rules": []}]
    text = without_policy_objects(payloads(out))
    assert "Let me see." in orjson.dumps(text).decode()


@by_surface
def test_a_redacted_tool_call_keeps_valid_json(surface: str) -> None:
    arguments = '{"to": "call +1 415 555 0100 now", "n": 2}'
    out, gov = stream(surface, (("send_sms", (arguments[:10], arguments[10:])),))
    assert not gov.stopped
    assert b"555 0100" not in out
    sent = orjson.loads(arguments_sent(surface, out))
    assert sent["n"] == 2 and "[REDACTED" in sent["to"]
    if surface == "responses":  # the frames that repeat the arguments carry the redaction
        done = [p for p in payloads(out) if p["type"] == "response.function_call_arguments.done"]
        assert orjson.loads(done[0]["arguments"]) == sent


@by_surface
def test_in_shadow_a_refused_call_passes_and_is_recorded(surface: str) -> None:
    out, gov = stream(surface, (("run_shell", (FORBIDDEN,)),), enforced=False)
    assert not gov.stopped
    assert arguments_sent(surface, out) == FORBIDDEN
    policy = gov.governance.policy_object()
    assert policy["decision"] == "refuse" and policy["effective_decision"] == "allow"
    assert policy["tool_calls"][0]["decision"] == "refuse"


@by_surface
def test_whole_answers_decide_each_call(surface: str) -> None:
    adapter = ADAPTERS[surface]
    answer = WHOLE[surface]({"model": "m"}, reply((("get_weather", (SAFE,)),
                                                   ("run_shell", (FORBIDDEN,)))))
    the_judge, verdicts = judge(surface), []

    def decide(name: str, arguments: str) -> str:
        verdict = the_judge.decide(name, arguments)
        verdicts.append((name, verdict.decision.decision, verdict.stopped))
        return verdict.arguments

    assert adapter.map_tool_calls(answer, decide) == answer  # nothing redacted
    assert verdicts == [("get_weather", "allow", False), ("run_shell", "refuse", True)]


@by_surface
def test_whole_answers_redact_arguments_as_json(surface: str) -> None:
    adapter = ADAPTERS[surface]
    answer = WHOLE[surface]({"model": "m"}, reply(
        (("send_sms", ('{"to": "+1 415 555 0100"}',)),)))
    the_judge = judge(surface)
    mapped = adapter.map_tool_calls(answer, lambda n, a: the_judge.decide(n, a).arguments)
    assert b"555 0100" not in orjson.dumps(mapped)
    assert b"REDACTED" in orjson.dumps(mapped)


def test_tool_call_facts_follow_the_mcp_convention() -> None:
    facts = tool_call_facts(dsl.RequestFacts(model="m", input_text="hi"), "run", '{"a": 1}')
    assert facts.input_text == 'run\n{"a": 1}' and facts.tool_name == "run"
    assert facts.tool_server is None and facts.tool_arguments_text == '{"a": 1}'


@pytest.mark.parametrize(("name", "refused"), [("delete_user", True), ("get_weather", False),
                                               ("run_shell", False)])
def test_a_tool_refused_whatever_its_arguments_is_recognised(name: str, refused: bool) -> None:
    # run_shell is refused only for what its arguments hold: its definition stays.
    assert policy_refuses_tool([TOOL_POLICY], dsl.RequestFacts(), name) is refused


@pytest.mark.parametrize(("adapter", "body", "left"), [
    (CHAT, {"tools": [{"type": "function", "function": {"name": "delete_user"}},
                      {"type": "function", "function": {"name": "get_weather"}}],
            "tool_choice": {"type": "function", "function": {"name": "delete_user"}}},
     {"tools": [{"type": "function", "function": {"name": "get_weather"}}]}),
    (CHAT, {"functions": [{"name": "delete_user"}], "function_call": {"name": "delete_user"}},
     {}),
    # The flat form OpenAI-compatible servers accept, for definitions and tool_choice.
    (CHAT, {"tools": [{"type": "function", "name": "delete_user", "parameters": {}},
                      {"type": "function", "name": "get_weather"}],
            "tool_choice": {"type": "function", "name": "delete_user"},
            "parallel_tool_calls": False},
     {"tools": [{"type": "function", "name": "get_weather"}], "parallel_tool_calls": False}),
    (CHAT, {"tools": [{"type": "function", "name": "Delete_User"}], "tool_choice": "required",
            "parallel_tool_calls": True}, {}),
    # Both spellings, disagreeing: the refused one decides (the upstream may read either).
    (CHAT, {"tools": [{"type": "function", "name": "delete_user",
                       "function": {"name": "get_weather"}},
                      {"type": "function", "name": "get_weather",
                       "function": {"name": "delete_user"}},
                      {"type": "function", "name": "get_time", "function": {"name": "get_time"}}]},
     {"tools": [{"type": "function", "name": "get_time", "function": {"name": "get_time"}}]}),
    (MESSAGES, {"tools": [{"name": "delete_user"}], "tool_choice": {"type": "any"}}, {}),
    (RESPONSES, {"tools": [{"type": "web_search"}, {"type": "function", "name": "delete_x"}],
                 "tool_choice": "auto"},
     {"tools": [{"type": "web_search"}], "tool_choice": "auto"}),
], ids=["chat", "chat-legacy", "chat-flat", "chat-flat-emptied", "chat-both-spellings",
        "messages", "responses"])
def test_refused_tool_definitions_are_taken_out(adapter: Any, body: JSON, left: JSON) -> None:
    kept, removed = adapter.without_tools(
        body, lambda name: policy_refuses_tool([TOOL_POLICY], dsl.RequestFacts(), name))
    assert kept == left and removed
    assert all(name.lower().startswith("delete_") for name in removed)


# --- hostile upstreams: calls whose arguments never stream ----------------------------------------

def stream_without_argument_deltas(surface: str, name: str, arguments: str
                                   ) -> tuple[bytes, StreamGovernor]:
    """A stream naming a call whose arguments never come as deltas (chat: the naming chunk has
    no `arguments`; responses: only the "done" frames carry them)."""
    raw = b"".join(FRAMES[surface]({"model": "m"}, reply(((name, (arguments,)),))))
    adapter = ADAPTERS[surface]
    gov = StreamGovernor(adapter, governance(surface, True), None, tool_judge=judge(surface))
    out = b""
    for frame in SSEParser().feed(raw):
        payload = None if frame.data == "[DONE]" else orjson.loads(frame.data or "")
        delta = adapter.output_delta(frame.event, payload) if payload is not None else None
        if delta is not None and delta.held:
            if surface != "chat.completions" or delta.text:
                continue  # the argument deltas never come
            call = payload["choices"][0]["delta"]["tool_calls"][0]  # type: ignore[index]
            del call["function"]["arguments"]
            frame = Frame(data=orjson.dumps(payload).decode(), event=frame.event,
                          raw=b"data: " + orjson.dumps(payload) + b"\n\n")
        out += gov.feed(frame, payload)
    return out + gov.finish(), gov


@by_surface
def test_a_call_named_without_streamed_arguments_is_still_decided(surface: str) -> None:
    out, gov = stream_without_argument_deltas(surface, "delete_user", '{"id": "Zqxw"}')
    assert gov.stopped and gov.governance.decision.reason_code == "DELETION_TOOL"
    assert b"Zqxw" not in out


def test_done_frames_never_carry_arguments_that_were_not_streamed_and_decided() -> None:
    out, gov = stream_without_argument_deltas("responses", "run_shell", FORBIDDEN)
    assert not gov.stopped  # decided on the arguments it streamed: none
    assert b"Zqxw" not in out
    done = [p for p in payloads(out) if p["type"] == "response.function_call_arguments.done"]
    assert done[0]["arguments"] == ""


def chat_chunk(delta: JSON, finish: str | None = None) -> tuple[Frame, JSON]:
    payload = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    data = orjson.dumps(payload)
    return Frame(data=data.decode(), event=None, raw=b"data: " + data + b"\n\n"), payload


@pytest.mark.parametrize("first", [
    {"function_call": {"name": "run_shell", "arguments": ""}},
    {"tool_calls": [{"index": 0, "id": "c", "type": "custom",
                     "custom": {"name": "run_shell", "input": ""}}]},
    {"tool_calls": [{"index": 0, "id": "c", "type": "function", "function": {"arguments": ""}}]},
], ids=["legacy-function-call", "custom-tool", "no-name"])
def test_every_kind_of_chat_call_is_decided_on_streams(first: JSON) -> None:
    gov = StreamGovernor(CHAT, governance("chat.completions", True), None,
                         tool_judge=judge("chat.completions"))
    kind = "function_call" if "function_call" in first else "tool_calls"
    out = gov.feed(*chat_chunk(first))
    for piece in (FORBIDDEN[:20], FORBIDDEN[20:]):
        if kind == "function_call":
            delta: JSON = {"function_call": {"arguments": piece}}
        else:
            inner = "custom" if "custom" in first["tool_calls"][0] else "function"
            key = "input" if inner == "custom" else "arguments"
            delta = {"tool_calls": [{"index": 0, inner: {key: piece}}]}
        out += gov.feed(*chat_chunk(delta))
    out += gov.feed(*chat_chunk({}, "tool_calls"))
    assert gov.stopped and b"Zqxw" not in out
    assert gov.governance.decision.reason_code == "DESTRUCTIVE_TOOL_CALL"


def test_whole_chat_answers_decide_legacy_nameless_and_custom_calls() -> None:
    answer = {"choices": [{"index": 0, "message": {
        "role": "assistant", "function_call": {"name": "delete_x", "arguments": "{}"},
        "tool_calls": [{"id": "a", "type": "function", "function": {"arguments": FORBIDDEN}},
                       {"id": "b", "type": "custom",
                        "custom": {"name": "send", "input": '{"to": "+1 415 555 0100"}'}}]}}]}
    the_judge, seen = judge("chat.completions"), []

    def decide(name: str, arguments: str) -> str:
        verdict = the_judge.decide(name, arguments)
        seen.append((name, verdict.decision.reason_code))
        return verdict.arguments

    mapped = CHAT.map_tool_calls(answer, decide)
    assert sorted(seen) == [("", "DESTRUCTIVE_TOOL_CALL"), ("delete_x", "DELETION_TOOL"),
                            ("send", "ALLOW")]
    custom = mapped["choices"][0]["message"]["tool_calls"][1]["custom"]["input"]
    assert "555 0100" not in custom and orjson.loads(custom)["to"].startswith("[REDACTED")


def test_output_rules_and_tool_rules_both_redact_a_call() -> None:
    """An output rule redacts the e-mail address as the arguments stream, the tool rules the
    phone number once the call is complete: both go, and the arguments stay JSON."""
    surface = "chat.completions"
    facts = dsl.RequestFacts(surface=surface, model="m", stream=True)
    arguments = '{"to": "jane.doe@example.com", "sms": "+1 415 555 0100"}'
    raw = b"".join(FRAMES[surface]({"model": "m"}, reply(
        (("notify", (arguments[:15], arguments[15:])),))))
    gov = StreamGovernor(CHAT, governance(surface, True),
                         lambda d: OUTPUT_GUARD.output_monitor(facts, d, True),
                         tool_judge=judge(surface))
    out = b"".join(gov.feed(f, None if f.data == "[DONE]" else orjson.loads(f.data or ""))
                   for f in SSEParser().feed(raw)) + gov.finish()
    sent = orjson.loads(arguments_sent(surface, out))
    assert sent["to"] == "[REDACTED:EMAIL]" and sent["sms"].startswith("[REDACTED")


def test_a_stream_of_many_calls_lists_a_bounded_number() -> None:
    calls = tuple((f"tool_{n}", ("{}",)) for n in range(100))
    out, gov = stream("messages", calls)
    assert out.count(b"tool_99") >= 1  # the last call went out
    policy = gov.governance.policy_object()
    assert not gov.stopped
    assert len(policy["tool_calls"]) == 64 and policy["tool_calls_unlisted"] == 36


@by_surface
def test_an_answer_whose_calls_all_pass_unchanged_is_the_same_object(surface: str) -> None:
    answer = WHOLE[surface]({"model": "m"}, reply((("get_weather", (SAFE,)),)))
    assert ADAPTERS[surface].map_tool_calls(answer, lambda name, arguments: arguments) is answer


def test_tool_definitions_are_decided_once_per_name_and_bounded() -> None:
    refuses = tool_definition_filter([TOOL_POLICY], dsl.RequestFacts())
    assert refuses("delete_user") and refuses("delete_user") and not refuses("get_weather")
    for number in range(MAX_TOOL_DEFINITIONS - 2):
        refuses(f"tool_{number}")
    with pytest.raises(InvalidRequest) as error:
        refuses("one_too_many")
    assert error.value.param == "tools"


def stream_with_arguments_in_the_naming_frame(surface: str, name: str, arguments: str
                                              ) -> tuple[bytes, StreamGovernor]:
    """A broken upstream: the frame naming the call already carries its arguments (messages
    `content_block_start` input, responses `output_item.added` arguments), none stream after."""
    raw = b"".join(FRAMES[surface]({"model": "m"}, reply(((name, (arguments,)),))))
    adapter = ADAPTERS[surface]
    gov = StreamGovernor(adapter, governance(surface, True), None, tool_judge=judge(surface))
    out = b""
    for frame in SSEParser().feed(raw):
        payload = None if frame.data == "[DONE]" else orjson.loads(frame.data or "")
        delta = adapter.output_delta(frame.event, payload) if payload is not None else None
        if delta is not None and delta.held:
            continue
        if payload is not None and payload.get("type") == "content_block_start" \
                and payload["content_block"]["type"] == "tool_use":
            payload["content_block"]["input"] = orjson.loads(arguments)
        if payload is not None and payload.get("type") == "response.output_item.added" \
                and payload["item"]["type"] == "function_call":
            payload["item"]["arguments"] = arguments
        data = orjson.dumps(payload).decode() if payload is not None else frame.data
        out += gov.feed(Frame(data=data, event=frame.event, raw=frame.raw), payload)
    return out + gov.finish(), gov


@pytest.mark.parametrize("surface", ["messages", "responses"])
@pytest.mark.parametrize(("arguments", "reason"), [
    (FORBIDDEN, "DESTRUCTIVE_TOOL_CALL"),
    # A redaction cannot rewrite the naming frame: the stream stops instead.
    ('{"to": "+1 415 555 0100"}', "TOOL_ARGUMENTS_NOT_REWRITABLE"),
], ids=["refused", "redacted"])
def test_arguments_that_come_with_the_name_are_decided_before_it_goes_out(
        surface: str, arguments: str, reason: str) -> None:
    out, gov = stream_with_arguments_in_the_naming_frame(surface, "run_shell", arguments)
    assert gov.stopped and gov.governance.decision.reason_code == reason
    assert b"Zqxw" not in out and b"555 0100" not in out


@pytest.mark.parametrize("surface", ["messages", "responses"])
def test_allowed_arguments_that_come_with_the_name_pass(surface: str) -> None:
    out, gov = stream_with_arguments_in_the_naming_frame(surface, "get_weather", SAFE)
    assert not gov.stopped and b"Oslo" in out


def test_one_tool_rule_decides_mcp_and_model_issued_calls_alike() -> None:
    # The MCP surface builds its facts with dsl.tool_facts, model-issued calls with
    # tool_call_facts: the same rule must refuse the same call on both.
    for name, refused in (("DELETE_user", True), ("delete_user", True), ("get_user", False)):
        mcp = dsl.tool_facts(dsl.RequestFacts(), name, "github", '{"id": 1}')
        model = tool_call_facts(dsl.RequestFacts(), name, '{"id": 1}')
        decisions = {facts.tool_server: decide_input([TOOL_POLICY], facts,
                                                     dsl.classify(facts.input_text)).decision
                     for facts in (mcp, model)}
        assert decisions == ({"github": "refuse", None: "refuse"} if refused
                             else {"github": "allow", None: "allow"})
