"""Rewrite and summary add their instruction upstream (docs/governed-surface.md), on every API, for
`.pol` and JSON policies, with the default instructions and with a policy's own; a client's own
system prompt is extended, never replaced. Asserted on what the mock upstream received. Simulate
(API and CLI) shows the instruction that would be added.

Policies (tests/policy_e2e/policies/): `instructed.pol` rewrites on "rephrase this" and
summarizes on "just the gist" with the default instructions; `json_rewrite.json` rewrites with
the default; `json_summary.json` summarizes with its own `config.rules.summary_instruction`;
the shipped `competitor_summary.pol` has its own summary instruction.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from e2e.support import SDK_TIMEOUT

from dsl.instructions import DEFAULT_REWRITE_INSTRUCTION, DEFAULT_SUMMARY_INSTRUCTION

HERE = Path(__file__).parent
JSON_SUMMARY = json.loads((HERE / "policies" / "json_summary.json").read_text())[
    "config"]["rules"]["summary_instruction"]
COMPETITOR_SUMMARY = (
    "Answer at a high level. Do not compare prices, do not disparage other companies, leave "
    "out actionable detail.")
CLIENT_SYSTEM = "You are Tidebot. Always answer in English."


@dataclass(frozen=True)
class Case:
    project: str
    prompt: str
    decision: str
    instruction: str


CASES = {
    "pol-default-rewrite": Case("proj_instructed", "Please rephrase this: why are tides?",
                                "rewrite", DEFAULT_REWRITE_INSTRUCTION),
    "pol-default-summary": Case("proj_instructed", "Tides, just the gist please.", "summary",
                                DEFAULT_SUMMARY_INSTRUCTION),
    "pol-own-summary": Case("proj_competitor", "How does Globex price its plans?", "summary",
                            COMPETITOR_SUMMARY),
    "json-default-rewrite": Case("proj_json_rewrite", "Please rephrase this: why are tides?",
                                 "rewrite", DEFAULT_REWRITE_INSTRUCTION),
    "json-own-summary": Case("proj_json_summary", "Tides, just the gist please.", "summary",
                             JSON_SUMMARY),
}
by_case = pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))


def user_message(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


#: A variant: (API path, the client's body, the body the upstream must get for an instruction).
Variant = tuple[str, dict[str, Any], Any]


def variants(text: str) -> dict[str, Variant]:
    """Each API without and with the client's own system prompt (messages: as a string and as
    blocks, one carrying `cache_control`)."""
    chat_plain = {"model": "gpt-x", "messages": [user_message(text)]}
    chat_own = {"model": "gpt-x", "messages": [{"role": "system", "content": CLIENT_SYSTEM},
                                               user_message(text)]}
    messages = {"model": "claude-x", "max_tokens": 32, "messages": [user_message(text)]}
    blocks = [{"type": "text", "text": CLIENT_SYSTEM, "cache_control": {"type": "ephemeral"}},
              {"type": "text", "text": "Keep it short."}]
    responses = {"model": "gpt-x", "input": text}
    return {
        "chat": ("/policy/v1/chat/completions", chat_plain, lambda i: {
            **chat_plain, "messages": [{"role": "system", "content": i}, user_message(text)]}),
        "chat+system": ("/policy/v1/chat/completions", chat_own, lambda i: {
            **chat_own, "messages": [{"role": "system", "content": i}, *chat_own["messages"]]}),
        "messages": ("/policy/v1/messages", messages, lambda i: {**messages, "system": i}),
        "messages+system": ("/policy/v1/messages", {**messages, "system": CLIENT_SYSTEM},
                            lambda i: {**messages, "system": f"{i}\n\n{CLIENT_SYSTEM}"}),
        "messages+system-blocks": ("/policy/v1/messages", {**messages, "system": blocks},
                                   lambda i: {**messages, "system": [
                                       {"type": "text", "text": i}, *blocks]}),
        "responses": ("/policy/v1/responses", responses,
                      lambda i: {**responses, "instructions": i}),
        "responses+instructions": ("/policy/v1/responses",
                                   {**responses, "instructions": CLIENT_SYSTEM},
                                   lambda i: {**responses,
                                              "instructions": f"{i}\n\n{CLIENT_SYSTEM}"}),
    }


VARIANTS = list(variants(""))
by_variant = pytest.mark.parametrize("variant", VARIANTS)


def call(governed: Any, path: str, project: str, body: dict[str, Any]) -> httpx2.Response:
    headers = {"authorization": "Bearer " + governed.keys[project],
               "x-policy-user": "ins-" + uuid.uuid4().hex[:12]}
    return httpx2.post(governed.url + path, json=body, headers=headers, timeout=SDK_TIMEOUT)


@by_case
@by_variant
def test_the_instruction_reaches_the_upstream_in_the_apis_own_place(
        governed: Any, mock: Any, case: Case, variant: str) -> None:
    path, body, expected = variants(case.prompt)[variant]
    response = call(governed, path, case.project, body)
    assert response.status_code == 200, response.text
    policy = response.json()["policy"]
    assert (policy["decision"], policy["effective_decision"], policy["enforced"]) == (
        case.decision, case.decision, True)
    [sent] = [r.json for r in mock.requests if r.path.startswith("/v1/")]
    # Exactly the client's body plus the instruction: nothing of the client's is lost.
    assert sent == expected(case.instruction)


@pytest.mark.parametrize("variant", ["chat+system", "messages+system", "responses+instructions"])
def test_a_streamed_request_gets_the_instruction_too(governed: Any, mock: Any,
                                                     variant: str) -> None:
    case = CASES["json-own-summary"]
    path, body, expected = variants(case.prompt)[variant]
    response = call(governed, path, case.project, {**body, "stream": True})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    [sent] = [r.json for r in mock.requests if r.path.startswith("/v1/")]
    sent.pop("stream_options", None)  # chat: the gateway asks for usage (docs/quotas.md)
    assert sent == {**expected(case.instruction), "stream": True}


def test_an_allowed_request_goes_upstream_unchanged(governed: Any, mock: Any) -> None:
    path, body, _ = variants("Why are there tides?")["messages+system-blocks"]
    assert call(governed, path, "proj_instructed", body).status_code == 200
    [sent] = [r.json for r in mock.requests if r.path.startswith("/v1/")]
    assert sent == body


@by_case
def test_simulate_shows_the_instruction_that_would_be_added(governed: Any, mock: Any,
                                                            case: Case) -> None:
    for surface, (_, body, _) in (("chat.completions", variants(case.prompt)["chat"]),
                                  ("messages", variants(case.prompt)["messages+system"]),
                                  ("responses", variants(case.prompt)["responses"])):
        response = httpx2.post(governed.url + "/policy/simulate",
                              json={**body, "surface": surface},
                              headers={"authorization": "Bearer " + governed.keys[case.project]},
                              timeout=SDK_TIMEOUT)
        assert response.status_code == 200, response.text
        result = response.json()
        assert (result["policy"]["decision"], result["upstream_called"]) == (case.decision, True)
        assert result["obligations"]["instruction"] == case.instruction
    assert mock.requests == []


def test_admin_simulate_shows_the_instruction_too(governed: Any, mock: Any) -> None:
    case = CASES["json-default-rewrite"]
    _, body, _ = variants(case.prompt)["responses+instructions"]
    admin = governed.token("ins-admin", roles=["admin"])
    response = httpx2.post(governed.url + "/api/policy-gateway/simulate",
                          json={**body, "surface": "responses", "project_id": case.project},
                          headers={"authorization": "Bearer " + admin}, timeout=SDK_TIMEOUT)
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["policy"]["decision"], result["obligations"]["instruction"]) == (
        "rewrite", DEFAULT_REWRITE_INSTRUCTION)
    assert mock.requests == []
