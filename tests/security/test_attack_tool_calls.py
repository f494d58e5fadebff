"""An attacker's pass over the tool calls models issue on the governed surface (sans-I/O):
a hostile upstream shapes its frames so that a refused call, or the arguments of one, reaches
the client without its verdict. Each test replays one trick against `StreamGovernor` with a
`ToolJudge`, or against the whole-answer mapping, and checks that the call is decided as the
client will read it.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

import dsl
from gateway.adapters import CHAT, MESSAGES, RESPONSES
from gateway.adapters.base import Adapter
from gateway.policy.governance import Governance
from gateway.policy.stream import StreamGovernor
from gateway.policy.toolcalls import ToolJudge, policy_refuses_tool
from gateway.upstream.sse import Frame, SSEParser

JSON = dict[str, Any]
POLICY = dsl.compile_policy(r'''
policy v1 "attack_tools" {
  name "Attacked tool rules"
  classification "internal"
  default allow
  on_error refuse
  denylist destructive = ["rm -rf"]
  rule no_destructive_tool_calls {
    when tool_arguments contains any of destructive
    then refuse reason DESTRUCTIVE_TOOL_CALL
  }
  tools deletion_tools = ["delete_*"]
  rule no_deletions {
    when tool.name in deletion_tools
    then refuse reason DELETION_TOOL
  }
  tools mailers = ["send_email"]
  rule no_mail_outside {
    when tool.name in mailers and tool_arguments contains "evil.example"
    then refuse reason MAIL_OUTSIDE
  }
}
''')
#: Every fragment of these is recognisable in the client's bytes (`Zqxw` marks them).
FORBIDDEN = '{"command": "Zqxw rm -rf /srv Zqxw"}'
SAFE = '{"city": "Oslo"}'


def governor(adapter: Adapter, surface: str) -> StreamGovernor:
    governance = Governance(
        policy_id="attack_tools", policy_revision=1, policy_name="Attacked tool rules",
        data_classification="internal", project_id="proj_x", project_label="X",
        account_id="acct_x", user_id="key:k", policy_target=surface, policy_user=None,
        quota_subject="key:k", surface=surface, model="m", stream=True,
        decision=dsl.Decision(), enforced=True, rollout_mode="enforced")
    facts = dsl.RequestFacts(surface=surface, model="m", stream=True, input_text="hello")
    return StreamGovernor(adapter, governance, None,
                          tool_judge=ToolJudge([POLICY], facts, enforced=True))


def frame(payload: JSON | None, event: str | None = None) -> tuple[Frame, JSON | None]:
    data = "[DONE]" if payload is None else orjson.dumps(payload).decode()
    raw = (f"event: {event}\n" if event else "") + f"data: {data}\n\n"
    return Frame(data=data, event=event, raw=raw.encode()), payload


def run(adapter: Adapter, surface: str, frames: list[tuple[Frame, JSON | None]]
        ) -> tuple[bytes, StreamGovernor]:
    gov = governor(adapter, surface)
    out = b"".join(gov.feed(f, payload) for f, payload in frames)
    return out + gov.finish(), gov


def payloads(out: bytes) -> list[JSON]:
    return [orjson.loads(f.data or "") for f in SSEParser().feed(out) if f.data != "[DONE]"]


# --- chat completions ---------------------------------------------------------------------------


def chunk(delta: JSON, finish: str | None = None, index: int = 0) -> tuple[Frame, JSON | None]:
    return frame({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                  "choices": [{"index": index, "delta": delta, "finish_reason": finish}]})


def call(index: int, arguments: str, **fields: Any) -> JSON:
    function = {k: v for k, v in fields.items() if k == "name"}
    return {"index": index, **{k: v for k, v in fields.items() if k != "name"},
            "function": {**function, "arguments": arguments}}


def chat_run(*frames: tuple[Frame, JSON | None]) -> tuple[bytes, StreamGovernor]:
    return run(CHAT, "chat.completions", [*frames, chunk({}, "tool_calls"), frame(None)])


def test_a_second_call_under_the_same_index_is_decided_under_its_own_name() -> None:
    """Parallel calls that share an index: the second names a refused tool."""
    out, gov = chat_run(
        chunk({"role": "assistant", "tool_calls": [call(0, "", id="a", type="function",
                                                        name="get_weather")]}),
        chunk({"tool_calls": [call(0, SAFE[:8])]}),
        chunk({"tool_calls": [call(0, "", id="b", type="function", name="delete_user")]}),
        chunk({"tool_calls": [call(0, '{"id": "Zqxw"}')]}))
    assert gov.stopped and b"Zqxw" not in out
    assert gov.governance.decision.decision == "refuse"


def test_a_name_that_comes_after_the_arguments_is_the_name_decided() -> None:
    out, gov = chat_run(
        chunk({"role": "assistant", "tool_calls": [call(0, '{"id": "Zqxw"}')]}),
        chunk({"tool_calls": [{"index": 0, "function": {"name": "delete_user"}}]}))
    assert gov.stopped and b"Zqxw" not in out
    assert gov.governance.decision.reason_code == "DELETION_TOOL"


def test_arguments_in_the_naming_chunk_are_held_for_the_verdict() -> None:
    out, gov = chat_run(chunk({"role": "assistant", "tool_calls": [
        call(0, FORBIDDEN, id="a", type="function", name="run_shell")]}))
    assert gov.stopped and b"Zqxw" not in out


def test_a_call_split_across_choices_is_decided_in_each() -> None:
    out, gov = chat_run(
        chunk({"role": "assistant", "tool_calls": [call(0, "", id="a", type="function",
                                                        name="get_weather")]}),
        chunk({"tool_calls": [call(0, FORBIDDEN)]}, index=1))
    assert gov.stopped and b"Zqxw" not in out


def test_two_choices_in_one_chunk_each_with_a_call() -> None:
    both = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": n, "finish_reason": None, "delta": {"tool_calls": [
                call(0, arguments, id=f"c{n}", type="function", name=name)]}}
                for n, (name, arguments) in enumerate((("get_weather", SAFE),
                                                       ("run_shell", FORBIDDEN)))]}
    out, gov = chat_run(frame(both))
    assert gov.stopped and b"Zqxw" not in out


# --- messages -----------------------------------------------------------------------------------


def event(payload: JSON) -> tuple[Frame, JSON | None]:
    return frame(payload, payload["type"])


MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
           "content": [], "stop_reason": None, "usage": {"input_tokens": 1, "output_tokens": 1}}


def tool_use_block(name: str, index: int = 0) -> tuple[Frame, JSON | None]:
    return event({"type": "content_block_start", "index": index, "content_block": {
        "type": "tool_use", "id": f"toolu_{index}", "name": name, "input": {}}})


def input_delta(text: str, index: int = 0) -> tuple[Frame, JSON | None]:
    return event({"type": "content_block_delta", "index": index,
                  "delta": {"type": "input_json_delta", "partial_json": text}})


def messages_run(*frames: tuple[Frame, JSON | None]) -> tuple[bytes, StreamGovernor]:
    return run(MESSAGES, "messages", [
        *frames, event({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                        "usage": {"output_tokens": 5}}), event({"type": "message_stop"})])


def test_input_json_after_content_block_stop_is_decided_with_its_call() -> None:
    """The client appends a delta to its block even after the block stopped: the rule that
    reads the name and the arguments together must see both."""
    out, gov = messages_run(
        event({"type": "message_start", "message": MESSAGE}),
        tool_use_block("send_email"),
        input_delta('{"to": "a@ok.example"'),
        event({"type": "content_block_stop", "index": 0}),
        input_delta(', "bcc": "Zqxw@evil.example"}'),
        event({"type": "content_block_stop", "index": 0}))
    assert gov.stopped and b"Zqxw" not in out


def test_a_tool_use_block_in_message_start_is_decided() -> None:
    hidden = {**MESSAGE, "content": [{"type": "tool_use", "id": "toolu_x", "name": "run_shell",
                                      "input": orjson.loads(FORBIDDEN)}]}
    out, gov = messages_run(event({"type": "message_start", "message": hidden}))
    assert gov.stopped and b"Zqxw" not in out


# --- responses ----------------------------------------------------------------------------------


def numbered(frames: list[JSON]) -> list[tuple[Frame, JSON | None]]:
    return [event({**payload, "sequence_number": n}) for n, payload in enumerate(frames)]


def response(output: list[JSON], status: str = "completed") -> JSON:
    return {"id": "resp_1", "object": "response", "status": status, "model": "m",
            "output": output, "usage": {"input_tokens": 1, "output_tokens": 1,
                                        "total_tokens": 2}}


def function_call(arguments: str, name: str = "get_weather", item_id: str = "fc_1") -> JSON:
    return {"type": "function_call", "id": item_id, "call_id": "call_1", "name": name,
            "arguments": arguments, "status": "completed"}


def responses_run(*frames: JSON) -> tuple[bytes, StreamGovernor]:
    return run(RESPONSES, "responses", numbered([
        {"type": "response.created", "response": response([], "in_progress")}, *frames]))


def streamed_call(arguments: str, repeated: str, *, done_id: str = "fc_1",
                  name: str = "get_weather") -> list[JSON]:
    """A call whose deltas stream `arguments` and whose "done" frames repeat `repeated`."""
    return [
        {"type": "response.output_item.added", "output_index": 0,
         "item": {**function_call("", name), "status": "in_progress"}},
        {"type": "response.function_call_arguments.delta", "output_index": 0,
         "item_id": "fc_1", "delta": arguments},
        {"type": "response.function_call_arguments.done", "output_index": 0,
         "item_id": done_id, "arguments": repeated},
        {"type": "response.output_item.done", "output_index": 0,
         "item": function_call(repeated, name, done_id)},
        {"type": "response.completed",
         "response": response([function_call(repeated, name, done_id)])}]


def test_done_frames_repeat_the_arguments_that_were_decided_not_others() -> None:
    out, gov = responses_run(*streamed_call(SAFE, FORBIDDEN))
    assert b"Zqxw" not in out
    assert not gov.stopped or gov.governance.decision.decision == "refuse"


def test_done_frames_under_another_item_id_are_decided() -> None:
    out, _ = responses_run(*streamed_call(SAFE, FORBIDDEN, done_id="fc_other"))
    assert b"Zqxw" not in out


def test_a_call_only_in_the_completed_response_is_decided() -> None:
    out, gov = responses_run({"type": "response.completed", "response": response(
        [function_call(FORBIDDEN, "run_shell")])})
    assert gov.stopped and b"Zqxw" not in out


def test_a_refused_name_only_in_the_completed_response_is_decided() -> None:
    out, gov = responses_run({"type": "response.completed", "response": response(
        [function_call('{"id": "Zqxw"}', "delete_user")])})
    assert gov.stopped and b"Zqxw" not in out


def test_a_call_in_the_created_response_is_decided() -> None:
    out, gov = run(RESPONSES, "responses", numbered([
        {"type": "response.created", "response": response(
            [function_call(FORBIDDEN, "run_shell")], "in_progress")},
        {"type": "response.completed", "response": response([])}]))
    assert gov.stopped and b"Zqxw" not in out


def test_an_allowed_call_streams_and_repeats_unchanged() -> None:
    out, gov = responses_run(*streamed_call(SAFE, SAFE))
    assert not gov.stopped
    completed = [p for p in payloads(out) if p["type"] == "response.completed"]
    assert completed[0]["response"]["output"][0]["arguments"] == SAFE


# --- names and whole answers --------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "\uff44\uff45\uff4c\uff45\uff54\uff45_user",  # full-width
    "d\u0435lete_user",  # Cyrillic ie
    "delete\u200b_user",  # zero-width space
    "DELETE_USER",
    "delete\u00adusers",  # a soft hyphen is dropped, and then no underscore: no match
])
def test_look_alike_names_do_not_dodge_a_tools_list(name: str) -> None:
    facts = dsl.RequestFacts(surface="chat.completions", model="m")
    refused = ToolJudge([POLICY], facts, enforced=True).decide(name, "{}").stopped
    expected = name != "delete\u00adusers"
    assert refused is expected
    assert policy_refuses_tool([POLICY], facts, name) is expected


def test_a_whole_answer_with_a_refused_call_in_a_second_choice_is_refused() -> None:
    answer = {"choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}},
        {"index": 1, "message": {"role": "assistant", "tool_calls": [
            {"id": "a", "type": "function",
             "function": {"name": "run_shell", "arguments": FORBIDDEN}}]}}]}
    judge = ToolJudge([POLICY], dsl.RequestFacts(), enforced=True)
    stopped = []

    def decide(name: str, arguments: str) -> str:
        verdict = judge.decide(name, arguments)
        stopped.append(verdict.stopped)
        return verdict.arguments

    CHAT.map_tool_calls(answer, decide)
    assert stopped == [True]


def test_a_block_started_out_of_order_cannot_take_another_blocks_arguments() -> None:
    """Clients place each started block after the ones before, whatever its `index`, and
    apply a delta to the block at that position: here the client's block 1 is `send_email`."""
    out, gov = messages_run(
        event({"type": "message_start", "message": MESSAGE}),
        tool_use_block("get_weather", index=1),
        tool_use_block("send_email", index=0),
        input_delta('{"to": "Zqxw@evil.example"}', index=1),
        event({"type": "content_block_stop", "index": 1}),
        event({"type": "content_block_stop", "index": 0}))
    assert gov.stopped and b"Zqxw" not in out


def test_a_text_block_started_at_another_position_ends_the_stream() -> None:
    out, gov = run(MESSAGES, "messages", [
        event({"type": "message_start", "message": MESSAGE}),
        event({"type": "content_block_start", "index": 1,
               "content_block": {"type": "text", "text": ""}}),
        event({"type": "content_block_delta", "index": 1,
               "delta": {"type": "text_delta", "text": "Zqxw"}}),
        event({"type": "content_block_stop", "index": 1})])
    assert gov.stopped and b"Zqxw" not in out


def test_arguments_under_another_item_id_are_decided_with_the_named_call() -> None:
    """The client applies argument deltas by `output_index`; the item id they carry is not
    the one the named item has."""
    out, gov = responses_run(
        {"type": "response.output_item.added", "output_index": 0,
         "item": {**function_call("", "send_email"), "status": "in_progress"}},
        {"type": "response.function_call_arguments.delta", "output_index": 0,
         "item_id": "fc_other", "delta": '{"to": "Zqxw@evil.example"}'},
        {"type": "response.completed", "response": response([])})
    assert gov.stopped and b"Zqxw" not in out


def test_message_snapshots_with_content_shift_the_positions() -> None:
    with_text = {**MESSAGE, "content": [{"type": "text", "text": "hi"}]}
    out, gov = messages_run(
        event({"type": "message_start", "message": with_text}),
        tool_use_block("get_weather", index=1),
        input_delta(SAFE, index=1),
        event({"type": "content_block_stop", "index": 1}))
    assert not gov.stopped and b"Oslo" in out


def test_a_chat_call_naming_two_tools_at_once_is_not_decided_under_the_harmless_one() -> None:
    """One call object with a `function` and a `custom` part: the client reads the one its
    `type` says."""
    two = {"index": 0, "id": "a", "type": "function",
           "function": {"name": "delete_user", "arguments": ""},
           "custom": {"name": "get_weather", "input": ""}}
    out, gov = chat_run(chunk({"role": "assistant", "tool_calls": [two]}),
                        chunk({"tool_calls": [call(0, '{"id": "Zqxw"}')]}))
    assert gov.stopped and b"Zqxw" not in out


def test_a_whole_chat_call_with_two_kinds_has_each_decided() -> None:
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "tool_calls": [
        {"id": "a", "type": "custom",
         "function": {"name": "get_weather", "arguments": SAFE},
         "custom": {"name": "run_shell", "input": FORBIDDEN}}]}}]}
    judge = ToolJudge([POLICY], dsl.RequestFacts(), enforced=True)
    stopped = []

    def decide(name: str, arguments: str) -> str:
        verdict = judge.decide(name, arguments)
        stopped.append(verdict.stopped)
        return verdict.arguments

    CHAT.map_tool_calls(answer, decide)
    assert True in stopped


def test_arguments_split_between_the_naming_frame_and_the_deltas_are_decided_together() -> None:
    """The client appends the deltas to the arguments `output_item.added` carried: neither half
    alone holds the denylisted term."""
    out, gov = responses_run(
        {"type": "response.output_item.added", "output_index": 0,
         "item": {**function_call('{"command": "rm -', "run_shell"), "status": "in_progress"}},
        {"type": "response.function_call_arguments.delta", "output_index": 0,
         "item_id": "fc_1", "delta": 'rf /srv Zqxw"}'},
        {"type": "response.completed", "response": response([])})
    assert gov.stopped and b"Zqxw" not in out


def test_done_frames_that_rename_the_call_are_decided_under_the_new_name() -> None:
    frames = streamed_call(SAFE, SAFE)
    frames[3]["item"]["name"] = "delete_user"  # output_item.done
    frames[4]["response"]["output"][0]["name"] = "delete_user"  # response.completed
    out, gov = responses_run(*frames)
    assert gov.stopped and gov.governance.decision.reason_code == "DELETION_TOOL"
    assert b"delete_user" not in b"".join(
        orjson.dumps(p) for p in payloads(out) if p.get("type") != "error")
