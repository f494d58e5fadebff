"""`StreamGovernor`, sans-I/O (docs/governed-surface.md, docs/quotas.md): upstream frames in, the
exact bytes a client gets out, for each API.

The upstream frames are the mock provider's (`gateway.upstream.echo`, the providers' own wire shapes)
with fixed ids. Expected output is written as the upstream payload plus the `policy` object the
client must see, encoded independently with orjson: byte equality therefore also proves that
splicing `policy` into a frame gives exactly the JSON a re-encoding would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import dsl
from gateway.adapters import CHAT, MESSAGES, RESPONSES
from gateway.adapters.base import Adapter
from gateway.policy.governance import Governance
from gateway.policy.stream import StreamGovernor
from gateway.upstream import echo
from gateway.upstream.sse import Frame, SSEParser

JSON = dict[str, Any]
POLICY_FILE = Path(__file__).parents[1] / "policy_e2e" / "policies" / "output_guard.pol"
OUTPUT_GUARD = dsl.compile_policy(POLICY_FILE.read_text())
WINDOW = OUTPUT_GUARD.output_window
REFUSAL_MESSAGE = "The answer was withheld by policy."  # output_guard.pol's refusal_message
TERM = "project nightjar"
DONE = b"data: [DONE]\n\n"
CREATED = 1_700_000_000

FramesOf = Callable[[JSON, echo.Reply], Iterator[bytes]]
APIS: dict[str, tuple[Adapter, FramesOf]] = {
    "chat.completions": (CHAT, echo.chat_completion_frames),
    "messages": (MESSAGES, echo.message_frames),
    "responses": (RESPONSES, echo.response_frames),
}
by_surface = pytest.mark.parametrize("surface", list(APIS))


# --- building blocks -------------------------------------------------------------------------------

def upstream(surface: str, chunks: list[str]) -> list[tuple[Frame, JSON | None]]:
    """The decoded frames the provider streams for `chunks` (17 input, 5 output tokens). Chat
    includes the usage chunk: the gateway always asks for it."""
    reply = echo.Reply(chunks=tuple(chunks), input_tokens=17, output_tokens=5, key="k1",
                       created=CREATED)
    body = {"model": "m", "stream_options": {"include_usage": True}}
    raw = b"".join(APIS[surface][1](body, reply))
    parser = SSEParser()
    frames = parser.feed(raw)
    assert parser.close() == b""
    return [(f, None if f.data == "[DONE]" else orjson.loads(f.data or "")) for f in frames]


def policy(surface: str, **changes: Any) -> JSON:
    """The `policy` object a client sees (docs/governed-surface.md); by default the input decision
    `allow`."""
    return {
        "policy_id": "output_guard", "policy_revision": 3, "decision": "allow",
        "effective_decision": "allow", "enforced": True, "rollout_mode": "enforced",
        "reason_code": "ALLOW", "triggered_categories": [], "allowlist_hits": [],
        "denylist_hits": [], "redacted_spans": {}, "policy_target": surface,
        "policy_user": None, "project_id": "proj_x", "quota": None, "stage": "input",
        **changes,
    }


def refused(surface: str, **changes: Any) -> JSON:
    return policy(surface, **{"decision": "refuse", "effective_decision": "refuse",
                              "reason_code": "INTERNAL_LEAK", "denylist_hits": [TERM],
                              "stage": "output", **changes})


def frame(payload: JSON, policy_object: JSON) -> bytes:
    """One SSE frame as a client must get it: the API's `event:` line (the payload's `type`,
    for messages and responses) and the payload with `policy` as its last key."""
    kind = payload.get("type")
    head = f"event: {kind}\n".encode() if isinstance(kind, str) else b""
    return head + b"data: " + orjson.dumps({**payload, "policy": policy_object}) + b"\n\n"


def governor(surface: str, *, rules: bool = True, enforced: bool = True,
             client_asked_usage: bool = True) -> StreamGovernor:
    adapter = APIS[surface][0]
    facts = dsl.RequestFacts(surface=surface, model="m", stream=True)
    decision = OUTPUT_GUARD.evaluate_input(facts, dsl.classify(""))
    governance = Governance(
        policy_id="output_guard", policy_revision=3, policy_name="Output guard",
        data_classification="internal", project_id="proj_x", project_label="X",
        account_id="acct_x", user_id="key:k", policy_target=surface, policy_user=None,
        quota_subject="key:k", surface=surface, model="m", stream=True, decision=decision,
        enforced=enforced, rollout_mode="enforced" if enforced else "shadow")
    factory = (lambda d: OUTPUT_GUARD.output_monitor(facts, d, enforced)) if rules else None
    return StreamGovernor(adapter, governance, factory, client_asked_usage=client_asked_usage)


def run(gov: StreamGovernor, frames: list[tuple[Frame, JSON | None]]) -> list[bytes]:
    """What the client gets for each upstream frame, then what `finish()` releases."""
    return [gov.feed(f, payload) for f, payload in frames] + [gov.finish()]


def payloads(frames: list[tuple[Frame, JSON | None]]) -> list[JSON]:
    return [payload for _, payload in frames if payload is not None]


def with_delta(surface: str, payload: JSON, text: str) -> JSON:
    """A text delta payload carrying `text` instead (each API keeps its text elsewhere)."""
    if surface == "chat.completions":
        choice = payload["choices"][0]
        return {**payload, "choices": [{**choice, "delta": {**choice["delta"], "content": text}}]}
    if surface == "messages":
        return {**payload, "delta": {**payload["delta"], "text": text}}
    return {**payload, "delta": text}


# --- no output rules: `policy` added to every frame, nothing else touched -------------------------

@by_surface
def test_every_frame_gets_the_policy_and_nothing_else_changes(surface: str) -> None:
    frames = upstream(surface, ["Hello", " there"])
    gov = governor(surface, rules=False)
    expected = [frame(p, policy(surface)) for p in payloads(frames)]
    if surface == "chat.completions":
        expected.append(DONE)  # `[DONE]` as the upstream sent it
    assert run(gov, frames) == [*expected, b""]
    assert (gov.input_tokens, gov.output_tokens, gov.stopped) == (17, 5, False)


@pytest.mark.parametrize("client_asked", [True, False])
def test_chat_usage_chunk_reaches_the_client_only_when_it_asked(client_asked: bool) -> None:
    frames = upstream("chat.completions", ["Hi"])
    gov = governor("chat.completions", rules=False, client_asked_usage=client_asked)
    out = run(gov, frames)
    usage_index = [i for i, (_, p) in enumerate(frames) if p and p["choices"] == []]
    assert usage_index == [len(frames) - 2]  # the mock's usage chunk, just before [DONE]
    usage_chunk = frames[usage_index[0]][1]
    assert usage_chunk is not None
    assert out[usage_index[0]] == (frame(usage_chunk, policy("chat.completions"))
                                   if client_asked else b"")
    # Either way the usage is counted for quota settlement and the event.
    assert (gov.input_tokens, gov.output_tokens) == (17, 5)


@by_surface
def test_output_characters_are_counted_until_usage_arrives(surface: str) -> None:
    """A stream cut before its usage is charged from what it streamed (docs/quotas.md)."""
    frames = upstream(surface, ["Hello", " there, friend"])
    gov = governor(surface, rules=False)
    first_usage = next(i for i, (f, p) in enumerate(frames)
                       if p is not None and APIS[surface][0].stream_usage(f.event, p) is not None)
    for f, payload in frames[:first_usage]:
        gov.feed(f, payload)
    before_usage = gov.usage_reported
    for f, payload in frames[first_usage:]:
        gov.feed(f, payload)
    assert gov.output_chars == len("Hello there, friend")
    assert (before_usage, gov.usage_reported) == (False, True)


# --- an output refusal ends the stream with the API's termination frames ---------------------------

#: Over one window of harmless text before the term, so some text must be released early.
PREFIX = "All systems are fine today. " * 12
REFUSED_CHUNKS = [PREFIX + "The code is project night", "jar, ok", " more"]


def termination(surface: str, first: JSON, last_number: int | None) -> bytes:
    """The frames that end a refused stream (docs/governed-surface.md), written out per API: the
    same error object (`policy_refused`, `permission_error`) in each API's own envelope."""
    if surface == "chat.completions":
        chunk = {"id": "chatcmpl-k1", "object": "chat.completion.chunk", "created": CREATED,
                 "model": "m",
                 "choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]}
        error = {"message": REFUSAL_MESSAGE, "type": "permission_error", "param": None,
                 "code": "policy_refused", "policy": refused(surface)}
        return frame(chunk, refused(surface)) + frame({"error": error}, refused(surface)) + DONE
    if surface == "messages":
        return frame({"type": "error", "error": {
            "type": "permission_error", "message": REFUSAL_MESSAGE, "code": "policy_refused",
            "details": {"error_code": "policy_refused"}}}, refused(surface))
    assert last_number is not None
    return frame({"type": "error", "code": "policy_refused", "message": REFUSAL_MESSAGE,
                  "param": None, "sequence_number": last_number + 1,
                  "error": {"type": "permission_error", "code": "policy_refused",
                            "message": REFUSAL_MESSAGE, "param": None,
                            "policy": refused(surface)}}, refused(surface))


#: Frames each API streams before its first text delta (chat: the role chunk).
LEAD_FRAMES = {"chat.completions": 1, "messages": 3, "responses": 4}


@by_surface
def test_term_split_across_chunks_ends_the_stream_before_any_of_it(surface: str) -> None:
    frames = upstream(surface, REFUSED_CHUNKS)
    gov = governor(surface)
    out = run(gov, frames)
    lead = LEAD_FRAMES[surface]
    sent = payloads(frames)
    first_delta = sent[lead]
    expected = [frame(p, policy(surface)) for p in sent[:lead]]
    # The first chunk goes out without the term's start, all that could still become a match.
    expected.append(frame(with_delta(surface, first_delta,
                                     REFUSED_CHUNKS[0].removesuffix("project night")),
                          policy(surface)))
    number = first_delta.get("sequence_number")
    expected.append(termination(surface, sent[0], number))
    assert out[:lead + 2] == expected
    # Then nothing more, whatever the upstream still sends, `[DONE]` included.
    assert out[lead + 2:] == [b""] * (len(out) - lead - 2)
    assert gov.stopped
    client_text = b"".join(out)
    assert b"night" not in client_text.replace(b'"denylist_hits":["project nightjar"]', b"")


@by_surface
def test_term_in_one_chunk_stops_the_stream_at_that_chunk(surface: str) -> None:
    frames = upstream(surface, [f"The code is {TERM}.", " Bye."])
    gov = governor(surface)
    out = run(gov, frames)
    lead = LEAD_FRAMES[surface]
    sent = payloads(frames)
    # What certainly precedes the term goes out with the refusal, then the stream ends.
    assert out[lead] == frame(with_delta(surface, sent[lead], "The code is "),
                              refused(surface)) + termination(
        surface, sent[0], sent[lead].get("sequence_number"))
    assert out[lead + 1:] == [b""] * (len(out) - lead - 1)


# --- output redaction: held back, redacted, released before the text ends --------------------------

EMAIL_CHUNKS = ["Mail jane.doe@example.com", " now", "."]
REDACTED_TEXT = "Mail [REDACTED:EMAIL] now."


def redacted_stream(surface: str) -> list[bytes]:
    """Expected client frames for EMAIL_CHUNKS: the e-mail rule fires on the first chunk
    (stage output), which releases "Mail " and holds the address (it could still grow); the
    next chunk releases it redacted, and the redaction is counted from then on; "now." could
    still begin an address, so it is held and goes out in one delta just before the frame that
    ends the text. Responses' "done" frames repeat the redacted text and are renumbered after
    the inserted delta."""
    sent = payloads(upstream(surface, EMAIL_CHUNKS))
    lead = LEAD_FRAMES[surface]
    fired = policy(surface, stage="output")
    counted = policy(surface, stage="output", redacted_spans={"email": 1})
    deltas = sent[lead:lead + len(EMAIL_CHUNKS)]
    rest = sent[lead + len(EMAIL_CHUNKS):]
    out = [frame(p, policy(surface)) for p in sent[:lead]]
    out.append(frame(with_delta(surface, deltas[0], "Mail "), fired))
    out.append(frame(with_delta(surface, deltas[1], "[REDACTED:EMAIL] "), counted))
    out.append(frame(with_delta(surface, deltas[2], ""), counted))
    flush = with_delta(surface, deltas[-1], "now.")
    if surface == "responses":
        flush["sequence_number"] += 1
        rest = [renumbered_with_text(p) for p in rest]
    out.append(frame(flush, counted))
    if surface == "chat.completions":
        rest = rest[:-1]  # the usage chunk: this client did not ask for it
    out += [frame(p, counted) for p in rest]
    if surface == "chat.completions":
        out.append(DONE)
    return out


def renumbered_with_text(payload: JSON) -> JSON:
    """A responses frame after the inserted delta: number + 1, and the redacted text where it
    repeats the whole output."""
    out = {**payload, "sequence_number": payload["sequence_number"] + 1}
    kind = payload["type"]
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": REDACTED_TEXT}
    if kind == "response.output_text.done":
        out["text"] = REDACTED_TEXT
    elif kind == "response.content_part.done":
        out["part"] = part
    elif kind == "response.output_item.done":
        out["item"] = {**payload["item"], "content": [part]}
    elif kind == "response.completed":
        message = {**payload["response"]["output"][0], "content": [part]}
        out["response"] = {**payload["response"], "output": [message]}
    return out


@by_surface
def test_email_in_the_output_is_redacted_before_it_leaves(surface: str) -> None:
    gov = governor(surface, client_asked_usage=False)
    out = b"".join(run(gov, upstream(surface, EMAIL_CHUNKS)))
    assert b"jane.doe" not in out
    assert out == b"".join(redacted_stream(surface))
    assert not gov.stopped


def test_held_back_chat_text_is_released_before_done_without_a_finish_chunk() -> None:
    frames = [(f, p) for f, p in upstream("chat.completions", ["Hello", " there"])
              if p is None or (p["choices"] and p["choices"][0]["finish_reason"] is None)]
    out = run(governor("chat.completions"), frames)
    last_delta = frames[-2][1]
    assert last_delta is not None
    # "Hello" waits for the next frame ("Hello@..." would be an address), "there" for the
    # end: `[DONE]` first releases it, then goes out.
    assert out[-3] == frame(with_delta("chat.completions", last_delta, "Hello "),
                            policy("chat.completions"))
    assert out[-2] == frame(with_delta("chat.completions", last_delta, "there"),
                            policy("chat.completions", stage="output")) + DONE
    assert out[-1] == b""


# --- shadow: the decision changes on the frame where the rule fired, nothing is enforced ------------

@by_surface
def test_shadow_reports_the_refusal_from_the_firing_frame_on(surface: str) -> None:
    chunks = ["The code is project night", "jar.", " Bye."]
    frames = upstream(surface, chunks)
    gov = governor(surface, enforced=False)
    out = run(gov, frames)
    lead = LEAD_FRAMES[surface]
    shadow_allow = policy(surface, enforced=False, rollout_mode="shadow")
    shadow_refuse = refused(surface, effective_decision="allow", enforced=False,
                            rollout_mode="shadow")
    sent = payloads(frames)
    assert out[:lead + 2] == [frame(p, shadow_allow) for p in sent[:lead]] + [
        frame(with_delta(surface, sent[lead], "The code is "), shadow_allow),
        # The second chunk completes the term: the rule fires on its frame ("nightjar." could
        # still begin an address: the e-mail rule holds it).
        frame(with_delta(surface, sent[lead + 1], "project "), shadow_refuse)]
    assert not gov.stopped
    # The text still reaches the client whole, every later frame reporting the refusal.
    decoded = [orjson.loads(part.split(b"data: ", 1)[1]) for chunk in out[lead + 1:]
               for part in chunk.split(b"\n\n") if part and b"[DONE]" not in part]
    assert all(d["policy"] == shadow_refuse for d in decoded)
    adapter = APIS[surface][0]
    text = "".join(adapter.stream_delta(d.get("type"), d) or "" for d in decoded)
    assert "The code is " + text == "".join(chunks)
