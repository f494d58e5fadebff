"""Model-written tool calls are policy output (sans-I/O, `StreamGovernor`): for each API, a
streamed tool call whose arguments hold a denylisted term is stopped and no byte of its
arguments reaches the client; an allowed call's arguments reach it whole, once, in the API's own
delta shape; redaction reaches them and the "done" frames that repeat them.

The frames are the mock provider's (`gateway.upstream.echo`), which streams the providers' own
tool-call shapes: chat `tool_calls` argument deltas, messages `input_json_delta`, responses
`response.function_call_arguments.delta`.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

import dsl
from gateway.policy.governance import Governance
from gateway.policy.stream import StreamGovernor
from gateway.upstream import echo
from gateway.upstream.sse import Frame, SSEParser
from tests.core.test_stream_governor import APIS, OUTPUT_GUARD, TERM

from .frames import without_policy_objects

JSON = dict[str, Any]
#: Arguments whose every fragment is recognisable in the client's bytes.
ARGUMENTS = '{"query": "Qzxv status of ' + TERM + ' Qzxv"}'
SAFE_ARGUMENTS = '{"query": "Qzxv weather in Oslo Qzxv", "units": "metric"}'
by_surface = pytest.mark.parametrize("surface", list(APIS))


def frames(surface: str, arguments: list[str], text: str = "Let me look.") -> list[
        tuple[Frame, JSON | None]]:
    reply = echo.Reply(chunks=(text,), input_tokens=9, output_tokens=5, key="k1",
                       created=1_700_000_000, tool_calls=(("lookup", tuple(arguments)),))
    raw = b"".join(APIS[surface][1]({"model": "m", "stream_options": {"include_usage": True}},
                                    reply))
    parsed = SSEParser().feed(raw)
    return [(f, None if f.data == "[DONE]" else orjson.loads(f.data or "")) for f in parsed]


def governor(surface: str, enforced: bool = True) -> StreamGovernor:
    facts = dsl.RequestFacts(surface=surface, model="m", stream=True)
    decision = OUTPUT_GUARD.evaluate_input(facts, dsl.classify(""))
    governance = Governance(
        policy_id="output_guard", policy_revision=3, policy_name="Output guard",
        data_classification="internal", project_id="proj_x", project_label="X",
        account_id="acct_x", user_id="key:k", policy_target=surface, policy_user=None,
        quota_subject="key:k", surface=surface, model="m", stream=True, decision=decision,
        enforced=enforced, rollout_mode="enforced" if enforced else "shadow")
    return StreamGovernor(APIS[surface][0], governance,
                          lambda d: OUTPUT_GUARD.output_monitor(facts, d, enforced))


def client_bytes(surface: str, arguments: list[str], enforced: bool = True
                 ) -> tuple[list[bytes], StreamGovernor]:
    gov = governor(surface, enforced)
    out = [gov.feed(f, payload) for f, payload in frames(surface, arguments)] + [gov.finish()]
    return out, gov


def decoded(out: list[bytes]) -> list[JSON]:
    parsed = SSEParser().feed(b"".join(out))
    return [orjson.loads(f.data or "") for f in parsed if f.data != "[DONE]"]


def argument_deltas(surface: str, payloads: list[JSON]) -> list[str]:
    """The argument texts the client got, from each API's argument delta frames."""
    adapter = APIS[surface][0]
    found = []
    for payload in payloads:
        delta = adapter.output_delta(payload.get("type"), payload)
        if delta is not None and delta.held:
            found.append(delta.text)
    return found


def splits(text: str) -> list[list[str]]:
    """`text` cut in two at several offsets (also inside the term), and in 3-character chunks."""
    start = text.index(TERM)
    offsets = sorted({1, start, start + 1, start + len(TERM) // 2, start + len(TERM) - 1,
                      len(text) - 1})
    return [[text[:cut], text[cut:]] for cut in offsets] + [
        [text[i:i + 3] for i in range(0, len(text), 3)]]


@by_surface
@pytest.mark.parametrize("pieces", splits(ARGUMENTS), ids=lambda p: f"{len(p)}:{len(p[0])}")
def test_a_tool_call_with_a_denylisted_term_is_stopped_and_none_of_it_leaves(
        surface: str, pieces: list[str]) -> None:
    out, gov = client_bytes(surface, pieces)
    sent = b"".join(out)
    assert gov.stopped and gov.governance.decision.decision == "refuse"
    assert gov.governance.decision.denylist_hits == (TERM,)
    # Not one byte of the arguments: no fragment of them (outside the `policy` object, which
    # names the term it found), no argument delta with text.
    frames_without_policy = b"".join(
        orjson.dumps(without_policy_objects(p)) for p in decoded(out))
    assert b"Qzxv" not in sent
    assert b"nightjar" not in frames_without_policy and b"query" not in frames_without_policy
    assert all(text == "" for text in argument_deltas(surface, decoded(out)))
    # The text before the call did go out (in as many deltas as the monitor released it),
    # and the stream ends with the API's refusal.
    adapter = APIS[surface][0]
    text_deltas = [adapter.output_delta(p.get("type"), p) for p in decoded(out)]
    assert "".join(d.text for d in text_deltas if d is not None and not d.held) == "Let me look."
    assert b"content_filter" in sent or b"policy_refused" in sent or b"response.failed" in sent


@by_surface
def test_an_allowed_tool_call_reaches_the_client_whole_once_and_in_order(surface: str) -> None:
    pieces = [SAFE_ARGUMENTS[i:i + 5] for i in range(0, len(SAFE_ARGUMENTS), 5)]
    out, gov = client_bytes(surface, pieces)
    assert not gov.stopped
    payloads = decoded(out)
    assert "".join(argument_deltas(surface, payloads)) == SAFE_ARGUMENTS
    # Withheld while undecided: the arguments go out in one frame when the call ends.
    assert [text for text in argument_deltas(surface, payloads) if text] == [SAFE_ARGUMENTS]
    numbers = [p["sequence_number"] for p in payloads if "sequence_number" in p]
    assert numbers == list(range(len(numbers)))  # responses: contiguous after withholding
    assert all(p["policy"]["decision"] == "allow" for p in payloads)


@by_surface
def test_redaction_reaches_tool_call_arguments_and_the_frames_that_repeat_them(
        surface: str) -> None:
    arguments = '{"to": "jane.doe@example.com", "body": "hello"}'
    out, gov = client_bytes(surface, [arguments[:12], arguments[12:]])
    sent = b"".join(out)
    assert not gov.stopped
    assert b"jane.doe@example.com" not in sent
    expected = '{"to": "[REDACTED:EMAIL]", "body": "hello"}'
    assert "".join(argument_deltas(surface, decoded(out))) == expected
    if surface == "responses":
        done = [p for p in decoded(out) if p["type"] == "response.function_call_arguments.done"]
        completed = [p for p in decoded(out) if p["type"] == "response.completed"]
        assert done[0]["arguments"] == expected
        assert completed[0]["response"]["output"][1]["arguments"] == expected


@by_surface
def test_in_shadow_a_tool_call_is_not_held_and_the_decision_still_records_it(
        surface: str) -> None:
    out, gov = client_bytes(surface, [ARGUMENTS[:20], ARGUMENTS[20:]], enforced=False)
    assert not gov.stopped
    assert "".join(argument_deltas(surface, decoded(out))) == ARGUMENTS
    assert gov.governance.decision.decision == "refuse"  # recorded, not enforced


@by_surface
def test_a_term_spelled_with_json_escapes_in_tool_call_arguments_is_caught(surface: str
                                                                            ) -> None:
    """`\\u006e` is `n` to whoever parses the arguments: the policy reads them decoded too."""
    escaped = '{"query": "Qzxv project \\u006eightjar Qzxv"}'
    out, gov = client_bytes(surface, [escaped[:15], escaped[15:]])
    assert gov.stopped and gov.governance.decision.denylist_hits == (TERM,)
    assert b"Qzxv" not in b"".join(out)
    _, shadow = client_bytes(surface, [escaped], enforced=False)
    assert not shadow.stopped and shadow.governance.decision.decision == "refuse"


@by_surface
def test_whole_answers_read_tool_call_arguments_and_their_escapes(surface: str) -> None:
    adapter = APIS[surface][0]
    reply = echo.Reply(chunks=("Fine.",), input_tokens=1, output_tokens=1, key="k",
                       created=1, tool_calls=(("lookup", ('{"q": "project \\u006eightjar"}',)),))
    whole = {"chat.completions": echo.chat_completion, "messages": echo.message,
             "responses": echo.response}[surface]({"model": "m"}, reply)
    text = adapter.output_text(whole)
    assert TERM in text and "Fine." in text
    decision = OUTPUT_GUARD.evaluate_output(dsl.RequestFacts(surface=surface), text,
                                            dsl.Decision())
    assert decision.decision == "refuse"
