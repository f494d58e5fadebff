"""JSON policy documents (both documented shapes) decide exactly like their .pol equivalent."""

import json

import pytest
from helpers import decide

import dsl

CURRENT = {
    "name": "Support bot", "description": "JSON twin", "classification": "internal",
    "config": {
        "rules": {"allowlist": ["order", "refund"], "denylist": ["idiot", "shut up"],
                  "flagged_categories": ["hate"], "enforcement_action": "block",
                  "escalation_path": "https://hooks.example.com/x", "redact_pii": ["email"]},
        "deployment": {"enabled": True, "percentage": 10,
                       "auto_rollback": {"enabled": True, "threshold_pct": 20, "min_requests": 50,
                                         "window_minutes": 10, "cooldown_minutes": 30,
                                         "rollback_decisions": ["block"]}},
    },
}
POL = '''policy v1 "support_bot" {
  name "Support bot"
  description "JSON twin"
  classification "internal"
  escalation_path "https://hooks.example.com/x"
  allowlist allowlist = ["order", "refund"]
  denylist denylist = ["idiot", "shut up"]
  rule denylist { when input contains any of denylist then refuse }
  rule flagged_categories { when category "hate" then refuse }
  rule redact_pii { when pii any then allow redact pii email }
  rollout {
    otherwise canary 10%
    auto_rollback { enabled true threshold_pct 20 min_requests 50 window_minutes 10
                    cooldown_minutes 30 rollback_decisions refuse }
  }
}
'''
CORPUS = [
    "where is my order", "my refund, you idiot", "write a poem", "shut\nup about the refund",
    "order for jane@example.com", "ＩＤＩＯＴ order", "", "refund refund refund",  # noqa: RUF001 - look-alikes on purpose
]


@pytest.mark.parametrize("text", CORPUS)
def test_current_json_and_pol_decide_identically(text):
    from_json = dsl.compile_policy(CURRENT)
    from_pol = dsl.compile_policy(POL)
    assert decide(from_json, text).summary() == decide(from_pol, text).summary()


def test_json_text_and_declarations():
    compiled = dsl.compile_policy(json.dumps(CURRENT))
    assert compiled.policy_id == "support_bot"
    assert str(compiled.rollout.default) == "canary 10%"
    assert compiled.rollout.auto_rollback == dsl.AutoRollback(True, 20.0, 50, 10, 30, ("refuse",))
    assert compiled.rollout == dsl.compile_policy(POL).rollout


LEGACY = {
    "policy_id": "legacy_bot",
    "rules": {"denylist": ["secret plan"], "redact": ["email"], "response_pattern": "(?i)internal only",
              "rewrite_instead_of_refuse": False, "reason_codes": {"denylist": "SECRET_PLAN"},
              "flagged_categories": ["violence"]},
    "org_controls": {"data_classification": "restricted",
                     "user_quota": {"requests_per_hour": 100},
                     "project_quota": {"tokens_per_day": 100000}},
    "rollout": {"shadow": False, "canary": 25, "rollback_on_spike": True, "rollback_threshold": 15},
    "refusal_replacement": {"mode": "escalate", "escalation_path": "oncall@example.com"},
}


def test_legacy_quotas_take_the_tool_calls_unit():
    compiled = dsl.compile_policy({**LEGACY, "org_controls": {
        "user_quota": {"tool_calls_per_hour": 20, "requests_per_hour": 100},
        "project_quota": {"tool_calls": {"day": 500}}}})
    assert compiled.quotas == dsl.Quotas(
        project=(dsl.QuotaLimit("tool_calls", "daily", 500),),
        user=(dsl.QuotaLimit("tool_calls", "hour", 20), dsl.QuotaLimit("requests", "hour", 100)))


def test_legacy_shape():
    compiled = dsl.compile_policy(LEGACY)
    assert (compiled.policy_id, compiled.classification) == ("legacy_bot", "restricted")
    assert compiled.quotas == dsl.Quotas(project=(dsl.QuotaLimit("tokens", "daily", 100000),),
                                         user=(dsl.QuotaLimit("requests", "hour", 100),))
    assert str(compiled.rollout.default) == "canary 25%"
    assert compiled.rollout.auto_rollback.threshold_pct == 15
    decision = decide(compiled, "the Secret  Plan is ready")
    assert (decision.decision, decision.reason_code, decision.obligations.escalation_path) == (
        "escalate", "SECRET_PLAN", "oncall@example.com")
    request = dsl.RequestFacts(input_text="hi", model="m")
    start = compiled.evaluate_input(request, dsl.classify("hi"))
    assert compiled.evaluate_output(request, "INTERNAL ONLY data", start).decision == "escalate"


def test_bad_json_documents_give_diagnostics():
    assert [(d.line, d.message) for d in dsl.check('{"name": "x",}')] == [
        (1, "invalid JSON: Expecting property name enclosed in double quotes")]
    bad = '{\n  "name": "x",\n  "config": {"rules": {"denylist": "oops", "flagged_categories": ["hat"]}}\n}'
    found = [(d.line, d.column, d.message, d.hint) for d in dsl.check(bad)]
    assert found[0][:3] == (3, 24, "`denylist` must be a list of strings")
    assert found[1][2:] == ("unknown category 'hat'", "did you mean `hate`?")


@pytest.mark.parametrize(("change", "message"), [
    ({"config": {"rules": {"enforcement_action": "explode"}}},
     "`enforcement_action` must be one of rewrite, block, summarize, escalate"),
    ({"config": {"deployment": {"percentage": "abc"}}},
     "`percentage` must be a number from 0 to 100"),
    ({"config": {"deployment": {"percentage": 150}}}, "`percentage` must be from 0 to 100"),
    ({"config": {"deployment": {"enabled": "no"}}}, "`enabled` must be true or false"),
    ({"confg": {}}, "unknown key `confg` in the policy document"),
    ({"config": {"rules": {"denylst": ["x"]}}}, "unknown key `denylst` in `config.rules`"),
    ({"config": {"deployment": {"auto_rollback": {"treshold_pct": 5}}}},
     "unknown key `treshold_pct` in `config.deployment.auto_rollback`"),
])
def test_current_shape_refuses_bad_values_and_unknown_keys(change, message):
    doc = {"name": "x", **change}
    messages = [d.message for d in dsl.check(json.dumps(doc)) if d.severity == "error"]
    assert message in messages
    with pytest.raises(dsl.PolicyError):
        dsl.compile_policy(json.dumps(doc))


def test_unknown_key_gets_a_did_you_mean():
    found = dsl.check(json.dumps({"name": "x", "config": {"rules": {"denylst": ["x"]}}}))
    assert [d.hint for d in found] == ["did you mean `denylist`?"]


def test_legacy_shape_refuses_unknown_keys():
    doc = {"policy_id": "old", "rules": {"denylist": ["x"], "redactt": True},
           "org_controls": {"data_classification": "internal", "user_qouta": {}}}
    messages = sorted(d.message for d in dsl.check(json.dumps(doc)))
    assert messages == ["unknown key `redactt` in `rules`",
                        "unknown key `user_qouta` in `org_controls`"]
