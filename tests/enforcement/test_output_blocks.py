"""Every string the model writes is policy output, on streams: refusals, thinking, reasoning
summaries, several choices interleaved, and chat chunks carrying text and a tool call together.
Sans-I/O, through `StreamGovernor`, with frames in each provider's own shape."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from enforcement.test_tool_call_governor import governor
from gateway.adapters import CHAT
from gateway.policy.stream import StreamGovernor
from gateway.upstream.sse import SSEParser
from tests.core.test_stream_governor import TERM

from .frames import without_policy_objects

JSON = dict[str, Any]


def sse(payload: JSON, typed: bool) -> bytes:
    head = f"event: {payload['type']}\n".encode() if typed else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


def run(gov: StreamGovernor, payloads: list[JSON], typed: bool, done: bool = False) -> bytes:
    raw = b"".join(sse(p, typed) for p in payloads) + (b"data: [DONE]\n\n" if done else b"")
    out = b""
    for frame in SSEParser().feed(raw):
        out += gov.feed(frame, None if frame.is_done else orjson.loads(frame.data or ""))
    return out + gov.finish()


def without_policy(out: bytes) -> str:
    frames = SSEParser().feed(out)
    return " ".join(orjson.dumps(without_policy_objects(orjson.loads(f.data or ""))).decode()
                    for f in frames if f.data and f.data != "[DONE]")


def chunk(choice: JSON) -> JSON:
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": None, **choice}]}


def test_chat_choices_interleaved_are_each_decided_whole() -> None:
    frames = [chunk({"index": 0, "delta": {"content": "The code is proj"}}),
              chunk({"index": 1, "delta": {"content": "Hello there"}}),
              chunk({"index": 0, "delta": {"content": "ect nightjar, keep it."}}),
              chunk({"index": 1, "delta": {"content": " friend."}})]
    gov = governor("chat.completions")
    out = run(gov, frames, typed=False, done=True)
    assert gov.stopped
    assert "nightjar" not in without_policy(out) and "ect night" not in without_policy(out)


def test_a_chat_chunk_with_text_and_a_tool_call_is_split_and_each_decided() -> None:
    call = {"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "lookup", "arguments": '{"q": "Qzxv ' + TERM + '"}'}}
    parts = CHAT.split_output(None, chunk({"delta": {"role": "assistant", "content": "Sure.",
                                                     "tool_calls": [call]}}))
    assert parts is not None and len(parts) == 2
    assert parts[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Sure."}
    assert parts[1]["choices"][0]["delta"] == {"tool_calls": [call]}
    gov = governor("chat.completions")
    out = run(gov, [chunk({"delta": {"role": "assistant", "content": "Sure.",
                                     "tool_calls": [call]}}),
                    chunk({"delta": {}, "finish_reason": "tool_calls"})], typed=False,
              done=True)
    assert gov.stopped and b"Qzxv" not in out and b"Sure." in out


@pytest.mark.parametrize("field", ["refusal", "reasoning_content"])
def test_chat_refusals_and_streamed_reasoning_are_output(field: str) -> None:
    gov = governor("chat.completions")
    out = run(gov, [chunk({"delta": {field: "I cannot discuss proj"}}),
                    chunk({"delta": {field: "ect nightjar at all."}})], typed=False, done=True)
    assert gov.stopped and "nightjar" not in without_policy(out)


def test_messages_thinking_is_output() -> None:
    frames = [
        {"type": "message_start", "message": {"id": "msg_1", "type": "message",
                                              "role": "assistant", "content": [], "model": "m",
                                              "usage": {"input_tokens": 1, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "thinking_delta", "thinking": "They ask about project night"}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "thinking_delta", "thinking": "jar; I will tell them."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_stop"}]
    gov = governor("messages")
    out = run(gov, frames, typed=True)
    assert gov.stopped and "nightjar" not in without_policy(out)
    assert b"policy_refused" in out


@pytest.mark.parametrize("kind", ["response.reasoning_summary_text.delta",
                                  "response.refusal.delta", "response.reasoning_text.delta"])
def test_responses_reasoning_and_refusals_are_output(kind: str) -> None:
    where = {"item_id": "rs_1", "output_index": 0, "content_index": 0, "summary_index": 0}
    frames = [
        {"type": "response.created", "sequence_number": 0,
         "response": {"id": "resp_1", "object": "response", "status": "in_progress"}},
        {"type": kind, "sequence_number": 1, **where, "delta": "Plan: reveal project nigh"},
        {"type": kind, "sequence_number": 2, **where, "delta": "tjar to the user."},
        {"type": kind.replace(".delta", ".done"), "sequence_number": 3, **where,
         "text": "Plan: reveal project nightjar to the user."}]
    gov = governor("responses")
    out = run(gov, frames, typed=True)
    assert gov.stopped and "nightjar" not in without_policy(out)
    assert b"event: error" in out and b"policy_refused" in out  # the API's own ending


@pytest.mark.parametrize(("kind", "field"), [("response.mcp_call_arguments", "arguments"),
                                             ("response.code_interpreter_call_code", "code")])
def test_responses_hosted_tool_calls_are_held_output(kind: str, field: str) -> None:
    where = {"item_id": "mcp_1", "output_index": 0}
    frames = [
        {"type": "response.created", "sequence_number": 0,
         "response": {"id": "resp_1", "object": "response", "status": "in_progress"}},
        {"type": kind + ".delta", "sequence_number": 1, **where, "delta": "Qzxv project nigh"},
        {"type": kind + ".delta", "sequence_number": 2, **where, "delta": "tjar"},
        {"type": kind + ".done", "sequence_number": 3, **where,
         field: "Qzxv project nightjar"}]
    gov = governor("responses")
    out = run(gov, frames, typed=True)
    assert gov.stopped and b"Qzxv" not in out
    safe = [{**f, "delta": "Qzxv fine"} if f["type"].endswith(".delta") else f
            for f in frames[:2]] + [{**frames[3], field: "Qzxv fine"}]
    gov = governor("responses")
    out = run(gov, safe, typed=True)
    assert not gov.stopped and out.count(b"Qzxv fine") == 2  # one delta, then the done event


def test_one_chat_choice_finishing_does_not_cut_the_others_window() -> None:
    frames = [chunk({"index": 1, "delta": {"content": "The code is project night"}}),
              chunk({"index": 0, "delta": {"content": "Hello."}}),
              chunk({"index": 0, "delta": {}, "finish_reason": "stop"}),
              chunk({"index": 1, "delta": {"content": "jar, keep it."}}),
              chunk({"index": 1, "delta": {}, "finish_reason": "stop"})]
    gov = governor("chat.completions")
    out = run(gov, frames, typed=False, done=True)
    assert gov.stopped
    assert "night" not in without_policy(out) and "Hello." in without_policy(out)
