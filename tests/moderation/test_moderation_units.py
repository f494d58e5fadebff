"""The moderation package without a gateway: strict settings, verdict parsing, the cache, the
circuit breaker on trio's MockClock, and the Moderator against an in-process mock transport."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
import trio
import trio.testing

import dsl
from gateway.config import Config, ConfigError
from gateway.errors import BreakerOpen
from gateway.moderation import ModerationSettings, Moderator
from gateway.moderation.guard import CircuitBreaker, MemoryCache
from gateway.moderation.verdicts import (
    MalformedVerdict,
    Verdict,
    llama_guard_verdict,
    openai_results,
)
from tests.moderation_e2e.mock_moderation import moderation_result

# --- settings ---------------------------------------------------------------------------------


def test_settings_default_to_the_builtin_classifier() -> None:
    settings = ModerationSettings.from_mapping({})
    assert settings.classifier == "builtin" and settings.external is None
    assert settings.always_blocked == ("self-harm/instructions", "sexual/minors")


@pytest.mark.parametrize(("section", "message"), [
    ({"classifer": "openai"}, "unknown key(s) ['classifer']"),
    ({"classifier": "perspective"}, "moderation.classifier must be one of"),
    ({"openai": {"base_url": "http://x", "timeuot": 1}}, "unknown key(s) ['timeuot']"),
    ({"openai": {"timeout": 0}}, "moderation.openai.timeout must be a positive"),
    ({"llama_guard": {"max_concurrency": 0}}, "max_concurrency must be an integer"),
    ({"llama_guard": {"base_url": "ftp://x"}}, "must be an http(s) URL"),
    ({"always_blocked": ["sexual/kids"]}, "unknown categories ['sexual/kids']"),
    ({"unmoderated_images": "ignore"}, "unmoderated_images must be one of"),
    ({"cache_entries": -1}, "cache_entries must be an integer of at least 0"),
])
def test_settings_refuse_what_they_do_not_know(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        ModerationSettings.from_mapping(section)
    assert message in str(raised.value)
    with pytest.raises(ConfigError):
        Config.from_mapping({"moderation": section}, env={})


def test_chain_names_its_external_classifier() -> None:
    settings = ModerationSettings.from_mapping({"classifier": "chain",
                                                "chain_external": "llama_guard"})
    assert settings.external is not None and settings.external.name == "llama-guard"


# --- verdicts ---------------------------------------------------------------------------------


def test_openai_scores_map_one_to_one() -> None:
    answer = {"id": "m", "model": "x", "results": [
        moderation_result("a [[hate=0.7]] [[violence/graphic=0.2]]", "text")]}
    (verdict,) = openai_results(answer, 1)
    assert verdict.scores == {"hate": 0.7, "violence/graphic": 0.2}


@pytest.mark.parametrize("answer", [
    {"results": "no"}, {"results": []}, {"results": [{"category_scores": {"hate": "high"}}]},
    {"results": [{"category_scores": {"hate": 1.5}}]}, [1, 2]])
def test_openai_answers_out_of_shape_are_malformed(answer: Any) -> None:
    with pytest.raises(MalformedVerdict):
        openai_results(answer, 1)


def chat_answer(content: Any, logprob: float | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"message": {"role": "assistant", "content": content}}
    if logprob is not None:
        choice["logprobs"] = {"content": [{"token": content.split()[0], "logprob": logprob}]}
    return {"choices": [choice]}


def test_llama_guard_verdicts() -> None:
    assert llama_guard_verdict(chat_answer("safe")).scores == {}
    assert llama_guard_verdict(chat_answer("  safe\n")).scores == {}
    verdict = llama_guard_verdict(chat_answer("unsafe\nS10,S11"))
    assert verdict == Verdict({"hate": 1.0, "self-harm": 1.0})
    unknown = llama_guard_verdict(chat_answer("unsafe\nS7,S42"))
    assert unknown.scores == {} and unknown.unmapped == ("S7", "S42")
    scored = llama_guard_verdict(chat_answer("unsafe\nS12", logprob=-0.5))
    assert scored.scores["sexual"] == pytest.approx(0.6065, abs=1e-3)


@pytest.mark.parametrize("content", ["", "unsafe", "unsafe\n", "unsafe\nviolence",
                                     "maybe\nS1", "unsafe\nS1\nS2", "Safe", None, 42])
def test_malformed_llama_guard_verdicts(content: Any) -> None:
    with pytest.raises(MalformedVerdict):
        llama_guard_verdict(chat_answer(content))


def test_llama_guard_answer_without_choices_is_malformed() -> None:
    with pytest.raises(MalformedVerdict):
        llama_guard_verdict({"error": "x"})


# --- cache and breaker ------------------------------------------------------------------------


async def test_cache_is_bounded_lru() -> None:
    cache = MemoryCache(2)
    for key in ("a", "b"):
        await cache.put(key, Verdict({}))
    assert await cache.get("a") is not None  # a is now the most recent
    await cache.put("c", Verdict({}))
    assert await cache.get("b") is None and await cache.get("a") is not None
    assert len(cache) == 2
    none = MemoryCache(0)
    await none.put("a", Verdict({}))
    assert await none.get("a") is None


async def test_breaker_opens_half_opens_and_closes(autojump_clock: trio.testing.MockClock
                                                   ) -> None:
    breaker = CircuitBreaker(failures=3, cooldown=10.0)
    for _ in range(2):
        breaker.before_call()
        breaker.failed()
    assert breaker.state == "closed"
    breaker.before_call()
    breaker.failed()
    assert breaker.state == "open"
    with pytest.raises(BreakerOpen):
        breaker.before_call()
    await trio.sleep(10)
    assert breaker.state == "half-open"
    breaker.before_call()  # the one trial call
    with pytest.raises(BreakerOpen):
        breaker.before_call()  # others wait for its result
    breaker.failed()
    assert breaker.state == "open"  # the trial failed: open again for a full cool-down
    await trio.sleep(10)
    breaker.before_call()
    breaker.succeeded()
    assert breaker.state == "closed"


# --- the moderator ----------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.status = 200
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        if self.status != 200:
            return httpx2.Response(self.status, json={"error": {"message": "x"}})
        return httpx2.Response(200, json={"id": "m", "model": "x", "results": [
            moderation_result(text, "text") for text in body["input"]]})


def moderator(recorder: Recorder, **section: Any) -> Moderator:
    settings = ModerationSettings.from_mapping({
        "classifier": "openai", "openai": {"base_url": "http://moderation.test/v1"},
        **section})
    return Moderator(settings, {"OPENAI_API_KEY": "sk-mod"},
                     transport=httpx2.MockTransport(recorder))


POLICY = dsl.compile_policy('''policy v1 "p" {
  default allow
  rule r { when category "hate" in last_user then refuse reason HATE }
}''')


def facts(text: str) -> dsl.RequestFacts:
    return dsl.RequestFacts(input_text=text, last_user_text=text)


async def test_breaker_stops_calling_a_failing_classifier(
        autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder()
    recorder.status = 500
    mod = moderator(recorder, breaker_failures=2, breaker_cooldown=30)
    for attempt in range(4):
        outcome = await mod.classify_request([POLICY], facts(f"text {attempt}"), {})
        assert outcome.reason_code == "CLASSIFIER_ERROR"
    assert len(recorder.bodies) == 2  # the third and fourth never left
    assert outcome.error == "breaker_open"
    await trio.sleep(31)
    recorder.status = 200
    outcome = await mod.classify_request([POLICY], facts("[[hate=0.9]]"), {})
    assert outcome.error is None and outcome.scores == {"hate": 0.9}
    assert mod.breaker is not None and mod.breaker.state == "closed"
    await mod.aclose()


async def test_equal_texts_go_once_and_repeats_hit_the_cache() -> None:
    recorder = Recorder()
    mod = moderator(recorder)
    for _ in range(3):
        outcome = await mod.classify_request([POLICY], facts("same"), {})
        assert outcome.error is None
    assert recorder.bodies == [{"model": "omni-moderation-latest", "input": ["same"]}]
    await mod.aclose()


async def test_chain_sends_only_what_builtin_found_nothing_in() -> None:
    recorder = Recorder()
    mod = moderator(recorder, classifier="chain")
    outcome = await mod.classify_request([POLICY], facts("I will kill you, you idiot"), {})
    assert recorder.bodies == [] and outcome.classifier == "builtin+openai"
    assert outcome.classification.triggered()
    outcome = await mod.classify_request([POLICY], facts("quiet words [[hate=0.8]]"), {})
    assert len(recorder.bodies) == 1 and outcome.scores["hate"] == 0.8
    await mod.aclose()


async def test_chain_asks_the_external_classifier_when_the_policy_asks() -> None:
    recorder = Recorder()
    mod = moderator(recorder, classifier="chain", chain_policies=["p"])
    assert mod.asks_external("p") and not mod.asks_external("q")
    text = "I will kill you, you idiot [[hate=0.8]]"  # the lexicon finds harassment
    outcome = await mod.classify_request([POLICY], facts(text), {})
    assert recorder.bodies == [] and "hate" not in outcome.scores
    outcome = await mod.classify_request([POLICY], facts(text), {}, asked=True)
    assert recorder.bodies == [{"model": "omni-moderation-latest", "input": [text]}]
    assert outcome.scores["hate"] == 0.8 and outcome.scores["harassment"] >= 0.5  # both kept
    output = "you idiot, I will kill you [[hate=0.6]]"
    assert "hate" not in (await mod.classify_output(output)).categories
    assert (await mod.classify_output(output, asked=True)).categories["hate"] == 0.6
    assert len(recorder.bodies) == 2
    await mod.aclose()
    assert not moderator(recorder, chain_policies=["p"]).asks_external("p")  # chain only


def test_chain_policies_are_policy_ids() -> None:
    with pytest.raises(ValueError, match="chain_policies must be a list of policy ids"):
        ModerationSettings.from_mapping({"chain_policies": ["Not An Id"]})
    with pytest.raises(ValueError, match="chain_policies must be a list of policy ids"):
        ModerationSettings.from_mapping({"chain_policies": "strict"})


async def test_policies_that_read_no_category_send_nothing() -> None:
    recorder = Recorder()
    mod = moderator(recorder, always_blocked=[])
    plain = dsl.compile_policy('policy v1 "q" { default allow }')
    outcome = await mod.classify_request([plain], facts("anything"), {})
    assert recorder.bodies == [] and outcome.error is None
    await mod.aclose()


async def test_too_many_images_are_not_classified() -> None:
    recorder = Recorder()
    mod = moderator(recorder, max_images=2, openai={"base_url": "http://moderation.test/v1",
                                                     "images": True})
    body = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": f"https://img.example/{i}.png"}}
        for i in range(3)]}]}
    outcome = await mod.classify_request(
        [POLICY], dsl.RequestFacts(surface="chat.completions"), body)
    assert (outcome.reason_code, outcome.error) == ("CLASSIFIER_ERROR", "too_many_images")
    assert recorder.bodies == []
    await mod.aclose()
