"""The real gateway under hypercorn with `[moderation]` pointing at the mock moderation
upstream, called with the official SDKs: only the needed texts go out, each image alone, the
categories decide, and every classifier failure is the policy's `on_error` (never a 500)."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from openai.types import ModerationCreateResponse
from redis_server import RedisServer

from tests.moderation_e2e.conftest import Factory, ModeratedGateway
from tests.moderation_e2e.mock_moderation import MockModeration

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def openai_section(moderation: MockModeration, **table: Any) -> dict[str, Any]:
    return {"classifier": "openai",
            # A budget a loaded machine's classifier calls stay well within (a call that
            # timed out would be a classifier error, not the verdict a test expects).
            "openai": {"base_url": moderation.url, "api_key_env": "", "timeout": 5.0,
                       "images": True, **table},
            "breaker_failures": 100}


def chat(gw: ModeratedGateway, messages: list[dict[str, Any]]) -> httpx2.Response:
    return httpx2.post(gw.url + "/policy/v1/chat/completions", timeout=10,
                      headers={"authorization": f"Bearer {gw.key}"},
                      json={"model": "gpt-4o-mini", "messages": messages})


def wait_events(gw: ModeratedGateway, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while len(gw.events()) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return gw.events()


def test_answers_are_the_sdks_moderation_shape(moderated: Factory,
                                               moderation: MockModeration) -> None:
    gw = moderated(openai_section(moderation))
    assert chat(gw, [{"role": "user", "content": "hello [[violence=0.2]]"}]).status_code == 200
    assert moderation.answers
    for answer in moderation.answers:
        ModerationCreateResponse.model_validate(answer, strict=False)


def test_only_the_texts_a_rule_reads_are_sent(moderated: Factory,
                                              moderation: MockModeration) -> None:
    gw = moderated(openai_section(moderation))
    reply = chat(gw, [{"role": "system", "content": "be brief"},
                      {"role": "user", "content": "first question"},
                      {"role": "assistant", "content": "an answer"},
                      {"role": "user", "content": "second question"}])
    assert reply.status_code == 200, reply.text
    # input (always-blocked categories), last_user and system in one call; then the answer
    # (an output rule reads its categories). The assistant's turn alone is never sent.
    sent, output = moderation.inputs()
    assert len(sent) == 3 and "second question" in sent and "be brief" in sent
    assert "an answer" not in sent and output == [reply.json()["choices"][0]["message"]
                                                  ["content"]]


def test_categories_decide_and_are_recorded_with_scores(moderated: Factory,
                                                        moderation: MockModeration) -> None:
    gw = moderated(openai_section(moderation))
    reply = chat(gw, [{"role": "user", "content": "earlier [[violence=0.9]]"},
                      {"role": "assistant", "content": "ok"},
                      {"role": "user", "content": "calm now [[violence=0.3]]"}])
    assert reply.status_code == 200  # the rule reads the last user message only
    policy = reply.json()["policy"]
    assert policy["moderation"]["classifier"] == "openai"
    assert policy["moderation"]["categories"]["violence"] == 0.9
    reply = chat(gw, [{"role": "user", "content": "now [[violence=0.7]]"}])
    assert reply.status_code == 403
    policy = reply.json()["policy"]
    assert policy["reason_code"] == "VIOLENCE"
    assert policy["triggered_categories"] == ["violence"]
    event = wait_events(gw, 2)[-1]
    assert event["moderation"] == policy["moderation"]
    assert "now" not in str(event["moderation"])  # scores, never the text


def test_always_blocked_categories_come_from_the_external_classifier(
        moderated: Factory, moderation: MockModeration) -> None:
    gw = moderated(openai_section(moderation))
    reply = chat(gw, [{"role": "user", "content": "x [[sexual/minors=0.8]]"}])
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "moderation_blocked"


@pytest.mark.parametrize("mode", ["timeout", "500", "429", "garbage", "wrong_shape"])
def test_classifier_failure_is_on_error_never_a_500(moderated: Factory,
                                                    moderation: MockModeration,
                                                    mode: str) -> None:
    # Only the `timeout` mode waits (3 s, beyond the 1 s budget); the others answer at once,
    # and a loaded machine must not turn their answer into a timeout.
    gw = moderated(openai_section(moderation, timeout=1.0))
    moderation.mode, moderation.delay = mode, 3.0
    reply = chat(gw, [{"role": "user", "content": "hello"}])
    assert reply.status_code == 403, reply.text  # on_error refuse
    policy = reply.json()["policy"]
    assert policy["reason_code"] == "CLASSIFIER_ERROR"
    expected = {"timeout": "timeout", "500": "http_500", "429": "http_429",
                "garbage": "malformed", "wrong_shape": "malformed"}[mode]
    assert policy["moderation"]["error"] == expected
    assert policy["moderation"]["failed_classifier"] == "openai"
    assert policy["moderation"]["classifier"] == "builtin"  # what the rules saw instead
    (event,) = wait_events(gw, 1)
    assert event["reason_code"] == "CLASSIFIER_ERROR" and event["status"] == 403


def test_on_error_allow_lets_the_request_through_saying_why(moderated: Factory,
                                                            moderation: MockModeration) -> None:
    gw = moderated(openai_section(moderation), policy="lenient")
    moderation.mode = "500"
    reply = chat(gw, [{"role": "user", "content": "hello"}])
    assert reply.status_code == 200
    policy = reply.json()["policy"]
    assert (policy["decision"], policy["reason_code"]) == ("allow", "CLASSIFIER_ERROR")


def test_each_image_goes_alone_and_counts_with_the_text(moderated: Factory,
                                                        moderation: MockModeration) -> None:
    gw = moderated(openai_section(moderation))
    client = openai.OpenAI(base_url=gw.url + "/policy/v1", api_key=gw.key, max_retries=0)
    with client, pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://img.example/a.png"}},
            {"type": "image_url",
             "image_url": {"url": f"data:image/png;base64,{PNG}[[violence=0.95]]"}}]}])
    assert refused.value.response.json()["policy"]["reason_code"] == "VIOLENCE"
    images = [i for i in moderation.inputs() if isinstance(i[0], dict)]
    assert len(images) == 2 and all(len(i) == 1 for i in images)
    texts = [i for i in moderation.inputs() if isinstance(i[0], str)]
    assert all(isinstance(t, str) for batch in texts for t in batch)


def test_messages_images_base64_are_sent_as_data_urls(moderated: Factory,
                                                      moderation: MockModeration) -> None:
    gw = moderated(openai_section(moderation))
    client = anthropic.Anthropic(base_url=gw.url + "/policy", api_key=gw.key, max_retries=0)
    with client:
        client.messages.create(model="claude-sonnet-5-5", max_tokens=32, messages=[{
            "role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": PNG}},
                {"type": "text", "text": "describe"}]}])
    (image,) = [i for i in moderation.inputs() if isinstance(i[0], dict)]
    assert image == [{"type": "image_url",
                      "image_url": {"url": f"data:image/png;base64,{PNG}"}}]


def test_builtin_never_treats_images_as_safe(moderated: Factory,
                                             moderation: MockModeration) -> None:
    gw = moderated({})
    reply = chat(gw, [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://img.example/a.png"}}]}])
    assert reply.status_code == 403
    assert reply.json()["policy"]["reason_code"] == "IMAGE_NOT_MODERATED"
    gw = moderated({"unmoderated_images": "allow"}, policy="lenient")
    reply = chat(gw, [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://img.example/a.png"}}]}])
    assert reply.status_code == 200
    assert moderation.received == []


def test_unmoderated_images_refuse_even_when_on_error_allows(moderated: Factory) -> None:
    gw = moderated({"unmoderated_images": "refuse"}, policy="lenient")
    reply = chat(gw, [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://img.example/a.png"}}]}])
    assert reply.status_code == 403
    assert reply.json()["policy"]["reason_code"] == "IMAGE_NOT_MODERATED"


def test_repeated_text_is_classified_once(moderated: Factory,
                                          moderation: MockModeration) -> None:
    gw = moderated(openai_section(moderation))
    for _ in range(3):
        assert chat(gw, [{"role": "user", "content": "same words"}]).status_code == 200
    assert len(moderation.inputs()) == 2  # the prompt and the (echoed) answer, once each
    metrics = httpx2.get(gw.url + "/metrics").text
    assert 'gateway_classifier_cache_total{classifier="openai",result="hit"} 4.0' in metrics
    assert 'gateway_classifier_cache_total{classifier="openai",result="miss"} 2.0' in metrics
    assert "gateway_classifier_seconds_count" in metrics


def test_llama_guard_verdicts_map_through_the_table(moderated: Factory,
                                                    moderation: MockModeration) -> None:
    section = {"classifier": "llama-guard", "llama_guard": {
        "base_url": moderation.url, "model": "llama-guard-3", "timeout": 5.0}}
    gw = moderated(section)
    moderation.llama_verdict = "unsafe\nS1,S99"
    reply = chat(gw, [{"role": "user", "content": "something"}])
    assert reply.status_code == 403
    policy = reply.json()["policy"]
    assert policy["reason_code"] == "VIOLENCE"
    assert policy["moderation"]["unmapped_codes"] == ["S99"]
    assert all(path == "/v1/chat/completions" for path, _ in moderation.received)
    moderation.reset()
    moderation.llama_verdict = "I think it is fine"
    reply = chat(gw, [{"role": "user", "content": "something else"}])
    assert reply.status_code == 403
    assert reply.json()["policy"]["reason_code"] == "CLASSIFIER_ERROR"


def test_the_breaker_stops_calls_to_a_failing_classifier(moderated: Factory,
                                                         moderation: MockModeration) -> None:
    gw = moderated({**openai_section(moderation), "breaker_failures": 2,
                    "breaker_cooldown": 60.0}, policy="lenient")
    moderation.mode = "500"
    outcomes = []
    for index in range(4):
        reply = chat(gw, [{"role": "user", "content": f"message {index}"}])
        assert reply.status_code == 200  # on_error allow: served, saying why
        outcomes.append(reply.json()["policy"]["moderation"]["error"])
    assert outcomes == ["http_500", "http_500", "breaker_open", "breaker_open"]
    assert len(moderation.received) == 2
    metrics = httpx2.get(gw.url + "/metrics").text
    assert 'gateway_classifier_errors_total{classifier="openai",error="breaker_open"} 2.0' in (
        metrics)
    assert 'gateway_classifier_errors_total{classifier="openai",error="http_500"} 2.0' in metrics


def responses_with_image(gw: ModeratedGateway, image: dict[str, Any]) -> httpx2.Response:
    return httpx2.post(gw.url + "/policy/v1/responses", timeout=10,
                      headers={"authorization": f"Bearer {gw.key}"},
                      json={"model": "gpt-4o-mini", "input": [{"role": "user", "content": [
                          {"type": "input_text", "text": "what is this?"}, image]}]})


def test_responses_input_images_go_alone_to_the_classifier(moderated: Factory,
                                                           moderation: MockModeration) -> None:
    gw = moderated(openai_section(moderation))
    client = openai.OpenAI(base_url=gw.url + "/policy/v1", api_key=gw.key, max_retries=0)
    with client:
        client.responses.create(model="gpt-4o-mini", input=[{"role": "user", "content": [
            {"type": "input_text", "text": "what is this?"},
            {"type": "input_image", "image_url": "https://img.example/a.png", "detail": "auto"},
            {"type": "input_image", "detail": "low",
             "image_url": f"data:image/png;base64,{PNG}"}]}])
    images = [i for i in moderation.inputs() if isinstance(i[0], dict)]
    assert sorted(i[0]["image_url"]["url"] for i in images) == [
        "data:image/png;base64," + PNG, "https://img.example/a.png"]
    assert all(len(i) == 1 for i in images)
    # An always-blocked category found in an image blocks the request on every surface.
    reply = responses_with_image(gw, {"type": "input_image", "detail": "auto", "image_url":
                                      "https://img.example/[[self-harm/instructions=0.9]].png"})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == "moderation_blocked"
    assert reply.json()["policy"]["moderation"]["images"] == 1


def test_an_image_by_file_id_is_never_taken_as_moderated(moderated: Factory,
                                                         moderation: MockModeration) -> None:
    gw = moderated(openai_section(moderation))
    reply = responses_with_image(gw, {"type": "input_image", "file_id": "file-abc",
                                      "detail": "auto"})
    assert reply.status_code == 403, reply.text
    assert reply.json()["policy"]["reason_code"] == "IMAGE_NOT_MODERATED"
    assert not [i for i in moderation.inputs() if isinstance(i[0], dict)]
    gw = moderated({})  # the built-in classifier sees no image on the responses API either
    reply = responses_with_image(gw, {"type": "input_image", "detail": "auto",
                                      "image_url": "https://img.example/a.png"})
    assert reply.status_code == 403
    assert reply.json()["policy"]["reason_code"] == "IMAGE_NOT_MODERATED"


def test_the_cache_is_in_redis_when_it_is_configured(moderated: Factory,
                                                     moderation: MockModeration,
                                                     redis: RedisServer) -> None:
    # No per-worker LRU: a repeat can only be a hit from Redis (replicas share it the same way).
    gw = moderated({**openai_section(moderation), "cache_entries": 0},
                   redis={"url": redis.url, "key_prefix": "mod:"})
    text = "a question [[violence=0.2]] asked twice"
    for _ in range(2):
        assert chat(gw, [{"role": "user", "content": text}]).status_code == 200
    assert [i for i in moderation.inputs() if text in i] == [[text]]
    assert redis.command("KEYS", "mod:moderation:*")
    metrics = httpx2.get(gw.url + "/metrics", timeout=5).text
    assert 'gateway_classifier_cache_total{classifier="openai",result="hit"}' in metrics
