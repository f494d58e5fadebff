"""Output through the external classifier: the whole answer in one call, a stream in windows
of `stream_interval_chars` (not per frame), an enforced verdict ending the stream."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from tests.moderation_e2e.conftest import Factory, ModeratedGateway
from tests.moderation_e2e.mock_moderation import MockModeration
from tests.moderation_e2e.test_moderation_gateway import openai_section, wait_events


def call(gw: ModeratedGateway, scenario: dict[str, Any], *, stream: bool = False
         ) -> httpx2.Response:
    return httpx2.post(gw.url + "/policy/v1/chat/completions", timeout=10, headers={
        "authorization": f"Bearer {gw.key}", "x-mock-scenario": json.dumps(scenario)},
        json={"model": "gpt-4o-mini", "stream": stream,
              "messages": [{"role": "user", "content": "tell me"}]})


def output_calls(moderation: MockModeration) -> list[list[str]]:
    return [i for i in moderation.inputs() if "tell me" not in i]


def data_frames(text: str) -> list[Any]:
    return [json.loads(line[6:]) for line in text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


def test_whole_answer_is_classified_once(moderated: Factory,
                                         moderation: MockModeration) -> None:
    gw = moderated(openai_section(moderation))
    reply = call(gw, {"text": "you are awful [[harassment=0.9]]"})
    assert reply.status_code == 403
    policy = reply.json()["policy"]
    assert (policy["reason_code"], policy["stage"]) == ("HARASSING_OUTPUT", "output")
    assert policy["moderation"]["output"]["categories"] == {"harassment": 0.9}
    assert output_calls(moderation) == [["you are awful [[harassment=0.9]]"]]
    reply = call(gw, {"text": "a kind answer"})
    assert reply.status_code == 200


def test_output_classifier_failure_is_on_error(moderated: Factory,
                                               moderation: MockModeration) -> None:
    gw = moderated(openai_section(moderation))
    assert call(gw, {"text": "warm up"}).status_code == 200  # input classified and cached
    moderation.mode = "500"
    reply = call(gw, {"text": "a fresh answer"})
    assert reply.status_code == 403
    policy = reply.json()["policy"]
    assert policy["reason_code"] == "CLASSIFIER_ERROR"
    assert policy["moderation"]["output"]["error"] == "http_500"
    events = wait_events(gw, 2)
    assert events[-1]["reason_code"] == "CLASSIFIER_ERROR" and events[-1]["status"] == 403


def test_stream_is_classified_in_windows_not_per_frame(moderated: Factory,
                                                       moderation: MockModeration) -> None:
    gw = moderated({**openai_section(moderation), "stream_interval_chars": 40})
    chunks = [f"word{i:03d} " for i in range(30)]  # 8 characters each, 240 in all
    reply = call(gw, {"chunks": chunks}, stream=True)
    assert reply.status_code == 200
    windows = output_calls(moderation)
    # A window once 40 new characters arrived (5 chunks), plus a last one: not 30 calls.
    assert 5 <= len(windows) <= 8, windows
    sent = "".join(w[0] for w in windows)
    assert all(chunk.strip() in sent for chunk in chunks)  # every character was classified
    frames = data_frames(reply.text)
    assert frames[-1]["policy"]["decision"] == "allow"


def test_a_window_verdict_ends_the_stream(moderated: Factory,
                                          moderation: MockModeration) -> None:
    gw = moderated({**openai_section(moderation), "stream_interval_chars": 40})
    chunks = [f"word{i:03d} " for i in range(10)] + ["now [[harassment=0.9]] "] + [
        f"tail{i:03d} " for i in range(20)]
    # Frames apart in time, as a model streams them: each batch is checked before the next.
    reply = call(gw, {"chunks": chunks, "mode": "slow", "delay": 0.01}, stream=True)
    frames = data_frames(reply.text)
    # The API's own refusal ending: the content_filter chunk, then the error frame the SDKs raise.
    last, error = frames[-2], frames[-1]
    assert last["choices"][0]["finish_reason"] == "content_filter"
    assert last["policy"]["reason_code"] == "HARASSING_OUTPUT"
    assert error["error"]["code"] == "policy_refused"
    text = "".join(f["choices"][0]["delta"].get("content") or "" for f in frames
                   if f.get("choices"))
    assert "tail019" not in text


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_text_of_a_flagged_window_reaches_the_sdk(moderated: Factory,
                                                     moderation: MockModeration,
                                                     seed: int) -> None:
    """Through hypercorn and the official SDK, frames apart in time, random chunk sizes: what
    the client reads stops before the flagged window, and the stream ends with the refusal."""
    gw = moderated({**openai_section(moderation), "stream_interval_chars": 600})
    rng = random.Random(seed)
    text = "".join(f"word{i:03d} " for i in range(140)) + "[[harassment=0.9]] " + "".join(
        f"tail{i:03d} " for i in range(100))
    edges = sorted({0, len(text), *(rng.randrange(len(text)) for _ in range(60))})
    chunks = [text[a:b] for a, b in itertools.pairwise(edges)]
    client = openai.OpenAI(base_url=gw.url + "/policy/v1", api_key=gw.key, max_retries=0,
                           default_headers={"x-mock-scenario": json.dumps(
                               {"chunks": chunks, "mode": "slow", "delay": 0.002})})
    got = ""
    with client, pytest.raises(openai.APIError) as ended:
        for chunk in client.chat.completions.create(
                model="gpt-4o-mini", stream=True,
                messages=[{"role": "user", "content": "tell me"}]):
            if chunk.choices:
                got += chunk.choices[0].delta.content or ""
    assert ended.value.code == "policy_refused"
    assert text.startswith(got) and "[[" not in got
    flagged = next(w[0] for w in output_calls(moderation) if "[[" in w[0])
    assert len(got) <= text.index(flagged)  # nothing of the flagged window went out


def test_no_text_of_a_flagged_window_reaches_the_anthropic_sdk(moderated: Factory,
                                                               moderation: MockModeration
                                                               ) -> None:
    gw = moderated({**openai_section(moderation), "stream_interval_chars": 600})
    text = "".join(f"word{i:03d} " for i in range(140)) + "[[harassment=0.9]] " + "".join(
        f"tail{i:03d} " for i in range(100))
    chunks = [text[i:i + 37] for i in range(0, len(text), 37)]
    client = anthropic.Anthropic(base_url=gw.url + "/policy", api_key=gw.key, max_retries=0,
                                 default_headers={"x-mock-scenario": json.dumps(
                                     {"chunks": chunks, "mode": "slow", "delay": 0.002})})
    got = ""
    with client, pytest.raises(anthropic.APIStatusError) as ended:
        with client.messages.stream(model="claude-sonnet-5-5", max_tokens=1024, messages=[
                {"role": "user", "content": "tell me"}]) as stream:
            for delta in stream.text_stream:
                got += delta
    assert "policy_refused" in str(ended.value.body)
    assert text.startswith(got) and "[[" not in got
    flagged = next(w[0] for w in output_calls(moderation) if "[[" in w[0])
    assert len(got) <= text.index(flagged)
