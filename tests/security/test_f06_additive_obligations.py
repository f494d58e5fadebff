"""An inline refuse cancelled the project's escalation notice: only the winning
decision's obligations were kept. Now the most severe decision still wins, and the escalation
notice of every policy that escalated is sent."""

from __future__ import annotations

import orjson

REFUSE_ALL = '''policy v1 "strict" {
  default allow
  rule nope { when input contains "human" then refuse reason INLINE_REFUSED }
}'''


def test_an_inline_refusal_keeps_the_projects_escalation_notice(secure, capture):
    response = secure.chat("I want to speak to a human", policy=REFUSE_ALL,
                           headers={"x-policy-user": "refused-but-escalated"})
    assert response.status_code == 403, response.text
    policy = response.json()["policy"]
    assert (policy["decision"], policy["reason_code"]) == ("refuse", "INLINE_REFUSED")
    [notice] = capture.wait_for(1)
    event = orjson.loads(notice.body)
    assert (event["policy_user"], event["decision"], event["outcome"]) == (
        "refused-but-escalated", "refuse", "refused")
    assert event["escalation_targets"] == ["oncall"]
    assert set(event["allowlist_hits"]) == set()
    assert event["reason_code"] == "INLINE_REFUSED"


def test_nothing_is_sent_when_no_policy_escalated(secure, capture):
    assert secure.chat("please refuse a human?", policy=REFUSE_ALL).status_code == 403
    assert secure.chat("hello").status_code == 200
    assert capture.wait_for(1, timeout=1.0) == []
