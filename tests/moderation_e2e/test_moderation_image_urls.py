"""An attacker's pass over image moderation, against the real gateway under hypercorn and the
mock moderation upstream, called with the official openai SDK:

- the image behind a remote URL is swapped after a safe verdict: the next request, on any
  replica, is classified again (a remote URL's verdict is never cached);
- a `data:` URL is its image: its verdict is cached, by its bytes;
- a self-hosted classifier (Llama Guard) is never handed a caller's remote URL to fetch from
  inside the operator's network, unless the operator opts in;
- a failed image classification does not tell the caller why (timeout, refused connection,
  HTTP status: a port scan through the classifier); the event keeps the kind.
"""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest
from redis_server import RedisServer

from tests.moderation_e2e.conftest import Factory, ModeratedGateway
from tests.moderation_e2e.mock_moderation import MockModeration

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
SWAPPED = "https://attacker.example/a.png"
METADATA = "http://169.254.169.254/latest/meta-data/iam/"


def openai_section(moderation: MockModeration) -> dict[str, Any]:
    return {"classifier": "openai", "breaker_failures": 100,
            "openai": {"base_url": moderation.url, "api_key_env": "", "timeout": 1.0,
                       "images": True}}


def llama_section(moderation: MockModeration, **table: Any) -> dict[str, Any]:
    return {"classifier": "llama-guard", "breaker_failures": 100,
            "llama_guard": {"base_url": moderation.url, "model": "llama-guard-4",
                            "timeout": 1.0, "images": True, **table}}


def ask_about(gw: ModeratedGateway, url: str) -> Any:
    client = openai.OpenAI(base_url=gw.url + "/policy/v1", api_key=gw.key, max_retries=0)
    with client:
        return client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": url}}]}])


def refused(gw: ModeratedGateway, url: str) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as error:
        ask_about(gw, url)
    return error.value


def image_urls_sent(moderation: MockModeration) -> list[str]:
    """Every image URL the classifier was handed (moderations and Llama Guard calls)."""
    found = []
    for _path, body in moderation.received:
        parts = body.get("input") if "input" in body else body["messages"][0]["content"]
        for part in parts if isinstance(parts, list) else ():
            if isinstance(part, dict) and part.get("type") == "image_url":
                found.append(part["image_url"]["url"])
    return found


def test_swapping_the_image_behind_a_url_is_caught_on_every_replica(
        moderated: Factory, moderation: MockModeration, redis: RedisServer) -> None:
    # No per-worker LRU: a repeat could only be a hit from Redis, which replicas share.
    gw = moderated({**openai_section(moderation), "cache_entries": 0},
                   redis={"url": redis.url, "key_prefix": "swap:"})
    assert ask_about(gw, SWAPPED).status_code == 200  # a benign image, classified safe
    # The attacker swaps the file for one in an always-blocked category.
    moderation.served[SWAPPED] = "[[self-harm/instructions=0.97]]"
    for _ in range(2):
        error = refused(gw, SWAPPED)
        assert (error.status_code, error.code) == (400, "moderation_blocked")
    assert image_urls_sent(moderation) == [SWAPPED] * 3  # classified again every time
    assert redis.command("KEYS", "swap:moderation:*")  # the texts' verdicts are shared


def test_a_data_url_is_its_image_and_its_verdict_is_cached(moderated: Factory,
                                                           moderation: MockModeration) -> None:
    gw = moderated(openai_section(moderation))
    image = f"data:image/png;base64,{PNG}"
    for _ in range(2):
        assert ask_about(gw, image).status_code == 200
    assert image_urls_sent(moderation) == [image]
    other = f"data:image/png;base64,{PNG[:-4]}AAA="
    assert ask_about(gw, other).status_code == 200
    assert image_urls_sent(moderation) == [image, other]


@pytest.mark.parametrize("url", [METADATA, "https://img.example/a.png", " DATA:x",
                                 "file:///etc/passwd"])
def test_llama_guard_is_never_handed_a_remote_url(moderated: Factory,
                                                  moderation: MockModeration, url: str) -> None:
    gw = moderated(llama_section(moderation))
    error = refused(gw, url)  # an image no classifier saw: on_error refuse
    assert error.status_code == 403
    body = error.response.json()
    assert body["policy"]["reason_code"] == "IMAGE_NOT_MODERATED"
    assert image_urls_sent(moderation) == []
    assert url.strip() not in json.dumps(moderation.received)
    # An image given as bytes is sent.
    image = f"data:image/png;base64,{PNG}"
    assert ask_about(gw, image).status_code == 200
    assert image_urls_sent(moderation) == [image]


def test_unmoderated_images_refuse_holds_for_remote_urls_under_llama_guard(
        moderated: Factory, moderation: MockModeration) -> None:
    gw = moderated({**llama_section(moderation), "unmoderated_images": "refuse"},
                   policy="lenient")
    error = refused(gw, METADATA)
    assert (error.status_code, error.response.json()["policy"]["reason_code"]) == (
        403, "IMAGE_NOT_MODERATED")
    assert image_urls_sent(moderation) == []


def test_an_operator_may_let_llama_guard_fetch_remote_urls(moderated: Factory,
                                                           moderation: MockModeration) -> None:
    gw = moderated(llama_section(moderation, remote_images=True))
    url = "https://img.example/a.png"
    for _ in range(2):
        assert ask_about(gw, url).status_code == 200
    assert image_urls_sent(moderation) == [url, url]  # fetched each time, never cached


def test_a_failed_image_classification_does_not_tell_the_caller_why(
        moderated: Factory, moderation: MockModeration) -> None:
    gw = moderated(openai_section(moderation))
    moderation.image_status = 400  # the classifier could not fetch the caller's URL
    error = refused(gw, "http://10.0.0.7:6379/")
    assert error.status_code == 403
    policy = error.response.json()["policy"]
    assert policy["reason_code"] == "CLASSIFIER_ERROR"
    assert policy["moderation"]["error"] == "image_classification_failed"
    assert "http_400" not in error.response.text and "failed_part" not in error.response.text
    deadline = time.monotonic() + 5
    while not gw.events() and time.monotonic() < deadline:
        time.sleep(0.01)
    (event,) = gw.events()
    assert (event["moderation"]["error"], event["moderation"]["failed_part"]) == (
        "http_400", "image")
    # A text's failure says nothing about the caller's URLs: it is still named to the caller.
    moderation.image_status, moderation.mode = None, "500"
    client = openai.OpenAI(base_url=gw.url + "/policy/v1", api_key=gw.key, max_retries=0)
    with client, pytest.raises(openai.PermissionDeniedError) as text_failed:
        client.chat.completions.create(model="gpt-4o-mini",
                                       messages=[{"role": "user", "content": "hello"}])
    assert text_failed.value.response.json()["policy"]["moderation"]["error"] == "http_500"


def test_failing_images_do_not_open_the_breaker_for_everyone(moderated: Factory,
                                                             moderation: MockModeration) -> None:
    gw = moderated({**openai_section(moderation), "breaker_failures": 2,
                    "breaker_cooldown": 60.0})
    moderation.image_status = 400  # URLs the classifier cannot fetch, one after another
    client = openai.OpenAI(base_url=gw.url + "/policy/v1", api_key=gw.key, max_retries=0)
    with client:
        for index in range(4):  # images alone: no text call succeeds in between
            with pytest.raises(openai.PermissionDeniedError):
                client.chat.completions.create(model="gpt-4o-mini", messages=[{
                    "role": "user", "content": [{"type": "image_url", "image_url": {
                        "url": f"https://attacker.example/{index}.png"}}]}])
        moderation.image_status = None
        # Another caller's text is still classified.
        answer = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "a fresh question"}])
    assert answer.status_code == 200
    assert json.loads(answer.text)["policy"]["moderation"]["error"] is None
    assert ["a fresh question"] in moderation.inputs()
