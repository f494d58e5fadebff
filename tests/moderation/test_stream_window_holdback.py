"""A stream's output through an external classifier holds back each window until its verdict:
under random chunkings and batchings of the upstream's frames, for each API, the client never
holds text that was not classified yet, a flagged window never reaches it (not one byte), and
what is held back stays within the interval plus the batch that completed it."""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx2
import orjson
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import dsl
from gateway.adapters import CHAT, MESSAGES
from gateway.adapters.base import Adapter
from gateway.moderation import ModerationSettings, Moderator
from gateway.moderation.stream_windows import WindowedStream
from gateway.policy.governance import Governance
from gateway.policy.stream import StreamGovernor
from gateway.upstream import echo
from gateway.upstream.sse import Frame, SSEParser
from tests.moderation_e2e.mock_moderation import moderation_result

# Category rules apply on these two (the responses API is never sent to the classifier).
APIS: dict[str, tuple[Adapter, Any]] = {
    "chat.completions": (CHAT, echo.chat_completion_frames),
    "messages": (MESSAGES, echo.message_frames),
}
POLICY = dsl.compile_policy('''policy v1 "p" {
  default allow
  rule harassing_output {
    when category "harassment" in output
    then refuse reason HARASSING_OUTPUT
  }
  rule leak { when output contains "nightjar" then refuse reason LEAK }
}''')
FLAG = "[[harassment=0.9]]"
WORDS = [f"w{i:03d} " for i in range(400)]  # 2,000 characters


class Classifier:
    """The moderation endpoint: scores from markers, every input recorded."""

    def __init__(self) -> None:
        self.inputs: list[str] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        self.inputs.extend(body["input"])
        return httpx2.Response(200, json={"id": "m", "model": "x", "results": [
            moderation_result(text, "text") for text in body["input"]]})


def upstream_frames(surface: str, chunks: list[str]) -> list[tuple[Frame, Any]]:
    reply = echo.Reply(chunks=tuple(chunks), input_tokens=3, output_tokens=5, key="k1",
                       created=1_700_000_000)
    parser = SSEParser()
    frames = parser.feed(b"".join(APIS[surface][1](
        {"model": "m", "stream_options": {"include_usage": True}}, reply)))
    return [(f, None if f.data == "[DONE]" else orjson.loads(f.data or "")) for f in frames]


def windowed(surface: str, classifier: Classifier, interval: int, *, enforced: bool = True
             ) -> tuple[WindowedStream, Moderator]:
    facts = dsl.RequestFacts(surface=surface, model="m", stream=True)
    decision = POLICY.evaluate_input(facts, dsl.classify(""))
    governance = Governance(
        policy_id="p", policy_revision=1, policy_name="P", data_classification="internal",
        project_id="proj_x", project_label="X", account_id="acct_x", user_id="key:k",
        policy_target=surface, policy_user=None, quota_subject="key:k", surface=surface,
        model="m", stream=True, decision=decision, enforced=enforced,
        rollout_mode="enforced" if enforced else "shadow")
    governor = StreamGovernor(APIS[surface][0], governance,
                              lambda d: POLICY.output_monitor(facts, d, enforced))
    moderator = Moderator(ModerationSettings.from_mapping({
        "classifier": "openai", "stream_interval_chars": interval,
        "openai": {"base_url": "http://moderation.test/v1"}}), {},
        transport=httpx2.MockTransport(classifier))
    return WindowedStream(governor, moderator, [POLICY], facts, None), moderator


def client_text(surface: str, sent: bytes) -> str:
    parser = SSEParser()
    adapter = APIS[surface][0]
    return "".join(adapter.stream_delta(f.event, orjson.loads(f.data)) or ""
                   for f in parser.feed(sent) if f.data and f.data != "[DONE]")


def cuts(text: str, points: list[int]) -> list[str]:
    edges = sorted({0, len(text), *(p % (len(text) + 1) for p in points)})
    return [text[a:b] for a, b in itertools.pairwise(edges) if b > a]


def classified_prefix(fed: str, inputs: list[str]) -> int:
    """How long a prefix of `fed` the classifier saw, every character of it (the words are
    unique, so each window is found where it was cut)."""
    seen = [False] * len(fed)
    for window in inputs:
        start = fed.find(window)
        if start >= 0:
            seen[start:start + len(window)] = [True] * len(window)
    return seen.index(False) if False in seen else len(fed)


async def relay(stream: WindowedStream, surface: str, frames: list[tuple[Frame, Any]],
                batch_sizes: list[int], classifier: Classifier, interval: int) -> bytes:
    """What the relay does, checking after each batch what the client holds."""
    sent, index, fed = b"", 0, ""
    while index < len(frames) and not stream.stopped:
        size = batch_sizes[index % len(batch_sizes)]
        batch, index = frames[index:index + size], index + size
        adapter = APIS[surface][0]
        batch_text = "".join(adapter.stream_delta(f.event, p) or "" for f, p in batch
                             if p is not None)
        fed += batch_text
        sent += b"".join([stream.feed(f, p) for f, p in batch])
        sent += await stream.checkpoint()
        got = client_text(surface, sent)
        assert fed.startswith(got)
        assert len(got) <= classified_prefix(fed, classifier.inputs)
        if not stream.stopped:
            # Bounded by the interval and the batch, besides what the built-in monitor holds.
            assert len(fed) - len(got) < POLICY.output_window + interval + len(batch_text)
    if not stream.stopped:
        sent += await stream.checkpoint(final=True)
        sent += stream.finish()
    return sent


@settings(max_examples=60, deadline=None)
@given(surface=st.sampled_from(list(APIS)), words=st.integers(5, 400),
       flag_at=st.one_of(st.none(), st.integers(0, 400)),
       points=st.lists(st.integers(0, 2000), max_size=80),
       batch_sizes=st.lists(st.integers(1, 6), min_size=1, max_size=5),
       # The overlap (a quarter) must hold the whole marker for a window to see it whole.
       interval=st.integers(4 * len(FLAG), 1200))
def test_no_byte_of_a_window_goes_out_before_its_verdict(
        surface: str, words: int, flag_at: int | None, points: list[int],
        batch_sizes: list[int], interval: int) -> None:
    parts = WORDS[:words]
    if flag_at is not None:
        parts.insert(min(flag_at, words), FLAG + " ")
    text = "".join(parts)
    classifier = Classifier()
    stream, moderator = windowed(surface, classifier, interval)

    async def main() -> bytes:
        try:
            return await relay(stream, surface, upstream_frames(surface, cuts(text, points)),
                               batch_sizes, classifier, interval)
        finally:
            await moderator.aclose()

    sent = trio.run(main)
    got = client_text(surface, sent)
    assert text.startswith(got)
    if flag_at is None:
        assert got == text and not stream.stopped
        assert stream.windows <= len(text) // interval + 1  # windows, not frames
    else:
        assert stream.stopped and b"[[" not in sent and b"HARASSING_OUTPUT" in sent
        # Whatever went out before the flagged window was classified safe before it went.
        assert len(got) <= text.index(FLAG)


@pytest.mark.parametrize("flagged", [False, True])
def test_a_stream_the_built_in_monitor_stops_is_classified_before_its_last_text_goes(
        flagged: bool) -> None:
    """Text the monitor released before it stopped the stream still waits for the external
    verdict, and goes nowhere when that window is flagged."""
    words = "".join(WORDS[:160])  # 800 characters: the monitor releases all but its window
    text = words + (FLAG + " " if flagged else "") + "project nightjar. " + words
    classifier = Classifier()
    stream, moderator = windowed("chat.completions", classifier, 5000)

    async def main() -> bytes:
        try:
            frames = upstream_frames("chat.completions", cuts(text, list(range(0, 2000, 7))))
            return await relay(stream, "chat.completions", frames, [1], classifier, 5000)
        finally:
            await moderator.aclose()

    sent = trio.run(main)
    assert stream.stopped and b"content_filter" in sent
    assert sent.count(b'"finish_reason":"content_filter"') == 1  # one ending, not two
    got = client_text("chat.completions", sent)
    assert "nightjar" not in got and b"[[" not in sent
    assert len(classifier.inputs) == 1 and text.startswith(classifier.inputs[0])
    if flagged:
        assert got == "" and b'"triggered_categories":["harassment"]' in sent
    else:
        assert len(got) >= 200 and words.startswith(got) and b"LEAK" in sent


def test_in_shadow_nothing_is_held_and_the_verdict_is_kept() -> None:
    text = "".join(WORDS[:200]) + FLAG + " " + "".join(WORDS[200:260])
    classifier = Classifier()
    stream, moderator = windowed("chat.completions", classifier, 100, enforced=False)

    async def main() -> list[bytes]:
        try:
            out = []
            for frame, payload in upstream_frames("chat.completions", cuts(text, list(
                    range(0, 2000, 9)))):
                out.append(stream.feed(frame, payload) + await stream.checkpoint())
            out.append(await stream.checkpoint(final=True) + stream.finish())
            return out
        finally:
            await moderator.aclose()

    sent = trio.run(main)
    assert client_text("chat.completions", b"".join(sent)) == text  # shadow stops nothing
    assert not stream.stopped and stream.windows >= len(text) // 100
    # The window's verdict outlives the built-in monitor's own at the block's end.
    decision = stream.governor.governance.decision
    assert (decision.decision, decision.reason_code) == ("refuse", "HARASSING_OUTPUT")
    last_policy = b"".join(sent).rsplit(b'"policy":', 1)[1]
    assert b'"decision":"refuse","effective_decision":"allow"' in last_policy
