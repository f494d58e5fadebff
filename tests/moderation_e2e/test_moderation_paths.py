"""The other ways into a decision use the configured classifier too: the simulate API and
command (a simulation decides as the governed request would), and `/v1/*` (always-blocked
categories, and an inline policy whose `on_error` judges a failed classifier)."""

from __future__ import annotations

from typing import Any

import httpx2

from gateway.cli.simulate import _run_simulation
from tests.moderation_e2e.conftest import Factory, ModeratedGateway
from tests.moderation_e2e.mock_moderation import MockModeration
from tests.moderation_e2e.test_moderation_gateway import openai_section

VIOLENT = "describe the fight [[violence=0.9]]"
INLINE = '''policy v1 "inline" {
  default allow
  on_error %s
  rule violent { when category "violence" in last_user then refuse reason INLINE_VIOLENCE }
}'''


def post(gw: ModeratedGateway, path: str, body: dict[str, Any]) -> httpx2.Response:
    return httpx2.post(gw.url + path, timeout=10, json=body,
                      headers={"authorization": f"Bearer {gw.key}"})


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_simulate_decides_on_the_external_classifier(moderated: Factory,
                                                     moderation: MockModeration) -> None:
    gw = moderated(openai_section(moderation))
    answer = post(gw, "/policy/simulate", {"model": "gpt-4o-mini", "messages": user(VIOLENT)})
    assert answer.status_code == 200, answer.text
    policy = answer.json()["policy"]
    assert (policy["decision"], policy["reason_code"]) == ("refuse", "VIOLENCE")
    assert policy["moderation"]["classifier"] == "openai"
    assert policy["moderation"]["categories"] == {"violence": 0.9}
    assert [VIOLENT] in moderation.inputs()
    assert answer.json()["upstream_called"] is False
    moderation.mode = "500"  # a failing classifier: on_error, as on a real request
    answer = post(gw, "/policy/simulate", {"model": "gpt-4o-mini", "messages": user("new")})
    assert answer.json()["policy"]["reason_code"] == "CLASSIFIER_ERROR"


def test_the_simulate_command_decides_on_the_external_classifier(
        moderated: Factory, moderation: MockModeration) -> None:
    gw = moderated(openai_section(moderation))
    answer, events = _run_simulation(gw.state.config, {
        "model": "gpt-4o-mini", "messages": user(VIOLENT), "policy_project_id": "proj_mod"})
    assert (answer["policy"]["reason_code"], answer["policy"]["moderation"]["classifier"]) == (
        "VIOLENCE", "openai")
    assert [VIOLENT] in moderation.inputs()
    assert events[-1]["event_type"] == "simulation"


def test_v1_always_blocked_categories_come_from_the_external_classifier(
        moderated: Factory, moderation: MockModeration) -> None:
    gw = moderated(openai_section(moderation))
    text = "quiet words [[sexual/minors=0.8]]"  # nothing the lexicon would find
    reply = post(gw, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": user(text)})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == "moderation_blocked"
    assert moderation.inputs() == [[text]]
    moderation.mode = "500"  # no policy to judge a failure: the built-in classification stands
    reply = post(gw, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": user("hi")})
    assert reply.status_code == 200, reply.text


def test_v1_inline_policies_read_the_external_classifier(moderated: Factory,
                                                         moderation: MockModeration) -> None:
    gw = moderated(openai_section(moderation))
    reply = post(gw, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": user(VIOLENT),
                                              "policy": INLINE % "refuse"})
    assert reply.status_code == 403, reply.text
    moderation.mode = "500"
    for on_error, status in (("refuse", 403), ("allow", 200)):
        reply = post(gw, "/v1/chat/completions", {
            "model": "gpt-4o-mini", "messages": user(f"calm {on_error}"),
            "policy": INLINE % on_error})
        assert reply.status_code == status, reply.text


def test_v1_inline_policies_never_take_images_for_moderated(moderated: Factory) -> None:
    gw = moderated({})  # the built-in classifier: it cannot see images
    image = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://img.example/a.png"}}]}]
    reply = post(gw, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": image,
                                              "policy": INLINE % "refuse"})
    assert reply.status_code == 403, reply.text
    reply = post(gw, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": image})
    assert reply.status_code == 200  # no policy on the plain proxy: nothing requires it


def test_chain_policies_ask_for_the_external_classifier(moderated: Factory,
                                                        moderation: MockModeration) -> None:
    section = {**openai_section(moderation), "classifier": "chain",
               "chain_policies": ["categories", "inline"]}
    gw = moderated(section)
    text = "I will kill you, you idiot [[violence=0.9]]"  # the lexicon finds harassment
    reply = post(gw, "/policy/v1/chat/completions", {"model": "gpt-4o-mini",
                                                     "messages": user(text)})
    assert reply.status_code == 403, reply.text
    policy = reply.json()["policy"]
    assert policy["reason_code"] == "VIOLENCE"  # the external classifier's score
    assert policy["moderation"]["classifier"] == "builtin+openai"
    assert [text] in moderation.inputs()
    # An inline policy's id is the caller's choice: naming a listed one asks for nothing.
    gw = moderated({**section, "chain_policies": ["inline"]})
    moderation.reset()
    reply = post(gw, "/policy/v1/chat/completions", {
        "model": "gpt-4o-mini", "messages": user(text + " again"),
        "policy": INLINE % "refuse"})
    assert moderation.inputs() == []
