"""Per-request governance values (gateway/policy/governance.py): the caller's gateway fields
(docs/security.md), combining a project's and an inline policy's decisions
(docs/governed-surface.md) and label hygiene, and the `policy` object spliced into JSON
(docs/governed-surface.md)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import orjson
import pytest

import dsl
from dsl.decision import Decision, Obligations, Redactor
from gateway.errors import InvalidRequest, PolicyIdMismatch
from gateway.policy.governance import (
    GATEWAY_BODY_FIELDS,
    MAX_LABEL_LENGTH,
    Governance,
    combine,
    read_gateway_fields,
)

BODY = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}


# --- read_gateway_fields ------------------------------------------------------------------------


def test_without_gateway_fields_everything_is_unset_and_the_body_is_forwarded_whole() -> None:
    fields, forward = read_gateway_fields({}, dict(BODY))
    assert (fields.project_id, fields.target, fields.policy_user, fields.expected_policy_id,
            fields.inline_policy, fields.flagged_categories) == (
        None, None, None, None, None, frozenset())
    assert forward == BODY


@pytest.mark.parametrize(("header", "alias", "attribute"), [
    ("x-policy-project", "policy_project_id", "project_id"),
    ("x-policy-target", "policy_target", "target"),
    ("x-policy-user", "policy_user", "policy_user"),
    ("x-policy-user", "policy_user_id", "policy_user"),
])
def test_each_value_comes_from_its_header_or_its_body_alias_and_the_header_wins(
        header: str, alias: str, attribute: str) -> None:
    from_header, _ = read_gateway_fields({header: "from-header"}, dict(BODY))
    from_body, forward = read_gateway_fields({}, {**BODY, alias: "from-body"})
    both, _ = read_gateway_fields({header: "from-header"}, {**BODY, alias: "from-body"})
    assert getattr(from_header, attribute) == "from-header"
    assert getattr(from_body, attribute) == "from-body"
    assert getattr(both, attribute) == "from-header"
    assert alias not in forward


def test_policy_user_wins_over_policy_user_id() -> None:
    fields, _ = read_gateway_fields({}, {**BODY, "policy_user_id": "by-id", "policy_user": "u"})
    assert fields.policy_user == "u"


def test_a_null_alias_or_a_blank_header_counts_as_not_given() -> None:
    fields, _ = read_gateway_fields({"x-policy-user": "   ", "x-policy-target": ""},
                                    {**BODY, "policy_user": None, "policy_user_id": "u-7",
                                     "policy_target": "web"})
    assert (fields.policy_user, fields.target) == ("u-7", "web")


def test_values_are_trimmed() -> None:
    fields, _ = read_gateway_fields({"x-policy-target": "  mobile-app \t"}, dict(BODY))
    assert fields.target == "mobile-app"


def test_a_utf8_header_means_the_same_label_as_the_same_text_in_the_body() -> None:
    # The ASGI server decodes header bytes as latin-1; a client sends UTF-8.
    as_received = "mobile-äpp-日本".encode().decode("latin-1")
    from_header, _ = read_gateway_fields({"x-policy-target": as_received}, dict(BODY))
    from_body, _ = read_gateway_fields({}, {**BODY, "policy_target": "mobile-äpp-日本"})
    assert from_header.target == from_body.target == "mobile-äpp-日本"


def test_a_latin1_header_that_is_not_utf8_is_kept_as_received() -> None:
    fields, _ = read_gateway_fields({"x-policy-user": "caf\xe9"}, dict(BODY))
    assert fields.policy_user == "caf\xe9"


def test_every_gateway_body_field_is_removed_from_the_forwarded_body_and_the_input_is_kept(
) -> None:
    body = {**BODY, "policy_project_id": "p", "policy_target": "t", "policy_user": "u",
            "policy_user_id": "u2", "policy_id": "x", "policyId": "x", "policy": "src",
            "flagged_categories": ["hate"], "temperature": 0.2}
    original = dict(body)
    fields, forward = read_gateway_fields({}, body)
    assert forward == {**BODY, "temperature": 0.2}
    assert body == original
    assert set(GATEWAY_BODY_FIELDS) <= set(original)
    assert (fields.project_id, fields.target, fields.policy_user, fields.expected_policy_id,
            fields.inline_policy, fields.flagged_categories) == (
        "p", "t", "u", "x", "src", frozenset({"hate"}))


@pytest.mark.parametrize("name", ["policy_project_id", "policy_target", "policy_user",
                                  "policy_user_id", "policy_id", "policyId"])
@pytest.mark.parametrize("value", [7, 1.5, True, ["a"], {"a": 1}])
def test_a_non_string_label_in_the_body_is_invalid_request_naming_the_field(
        name: str, value: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        read_gateway_fields({}, {**BODY, name: value})
    assert caught.value.param == name
    assert caught.value.code == "invalid_request"


def test_a_wrongly_typed_alias_is_refused_even_when_the_header_wins() -> None:
    with pytest.raises(InvalidRequest) as caught:
        read_gateway_fields({"x-policy-user": "u"}, {**BODY, "policy_user_id": 42})
    assert caught.value.param == "policy_user_id"


@pytest.mark.parametrize("value", ["a\x00b", "tab\there", "line\nbreak", "x" * (
    MAX_LABEL_LENGTH + 1)])
def test_control_characters_or_overlong_labels_are_invalid_request(value: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        read_gateway_fields({"x-policy-target": value}, dict(BODY))
    assert caught.value.param == "x-policy-target"
    with pytest.raises(InvalidRequest):
        read_gateway_fields({}, {**BODY, "policy_target": value})


def test_a_label_of_the_maximum_length_is_accepted() -> None:
    fields, _ = read_gateway_fields({}, {**BODY, "policy_target": "t" * MAX_LABEL_LENGTH})
    assert fields.target == "t" * MAX_LABEL_LENGTH


def test_policy_id_and_policy_id_camel_case_both_name_the_expected_policy() -> None:
    snake, _ = read_gateway_fields({}, {**BODY, "policy_id": "support_bot"})
    camel, forward = read_gateway_fields({}, {**BODY, "policyId": "support_bot"})
    same, _ = read_gateway_fields({}, {**BODY, "policy_id": "a", "policyId": "a"})
    assert snake.expected_policy_id == camel.expected_policy_id == "support_bot"
    assert same.expected_policy_id == "a"
    assert "policyId" not in forward


def test_policy_id_and_policy_id_camel_case_that_disagree_are_a_mismatch() -> None:
    with pytest.raises(PolicyIdMismatch):
        read_gateway_fields({}, {**BODY, "policy_id": "a", "policyId": "b"})


def test_flagged_categories_accepts_the_request_flaggable_ones() -> None:
    fields, _ = read_gateway_fields({}, {**BODY, "flagged_categories": [
        "hate", "harassment", "illicit", "sexual", "hate"]})
    assert fields.flagged_categories == {"hate", "harassment", "illicit", "sexual"}


@pytest.mark.parametrize("value", ["hate", [1], [None], {"hate": True}, ["violence"],
                                   ["self-harm/instructions"], ["HATE"]])
def test_bad_flagged_categories_are_invalid_request(value: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        read_gateway_fields({}, {**BODY, "flagged_categories": value})
    assert caught.value.param == "flagged_categories"


INLINE = """policy v1 "inline" {
  default allow
  denylist fruit = ["banana"]
  rule fruit { when input contains any of fruit then refuse reason FRUIT }
}"""


# --- combine ------------------------------------------------------------------------------------


def decision(name: str, **fields: Any) -> Decision:
    return Decision(decision=name, reason_code=fields.pop("reason_code", name.upper()),
                    **fields)


def test_combine_with_nothing_is_the_primary_decision() -> None:
    primary = decision("rewrite")
    assert combine(primary, None) is primary


@pytest.mark.parametrize(("primary", "other", "winner"), [
    ("allow", "refuse", "other"), ("refuse", "allow", "primary"),
    ("rewrite", "summary", "other"), ("escalate", "summary", "primary"),
    ("summary", "escalate", "other"), ("refuse", "escalate", "primary"),
])
def test_the_more_severe_decision_wins(primary: str, other: str, winner: str) -> None:
    combined = combine(decision(primary, reason_code="P"), decision(other, reason_code="O"))
    expected = primary if winner == "primary" else other
    assert (combined.decision, combined.reason_code) == (
        expected, "P" if winner == "primary" else "O")


def test_on_a_tie_the_primary_decision_and_its_reason_are_kept() -> None:
    combined = combine(decision("refuse", reason_code="PROJECT"),
                       decision("refuse", reason_code="INLINE"))
    assert combined.reason_code == "PROJECT"


def test_hits_and_rules_of_both_are_united_in_order_without_duplicates() -> None:
    combined = combine(
        decision("allow", fired_rules=("a",), allowlist_hits=("order",),
                 denylist_hits=("x", "y"), triggered_categories=("hate",)),
        decision("refuse", fired_rules=("b", "a"), allowlist_hits=("order", "refund"),
                 denylist_hits=("y", "z"), triggered_categories=("violence", "hate")))
    assert combined.fired_rules == ("a", "b")
    assert combined.allowlist_hits == ("order", "refund")
    assert combined.denylist_hits == ("x", "y", "z")
    assert combined.triggered_categories == ("hate", "violence")


def test_redacted_spans_take_the_larger_count_per_kind() -> None:
    combined = combine(decision("allow", redacted_spans=MappingProxyType({"email": 2,
                                                                          "phone": 1})),
                       decision("allow", redacted_spans=MappingProxyType({"email": 1,
                                                                          "ssn": 3})))
    assert dict(combined.redacted_spans) == {"email": 2, "phone": 1, "ssn": 3}


def test_redactions_of_both_compose_whoever_wins() -> None:
    emails = Redactor(frozenset({"email"}))
    phones = Redactor(frozenset({"phone"}))
    combined = combine(decision("allow", obligations=Obligations(redactor=emails)),
                       decision("rewrite", obligations=Obligations(redactor=phones,
                                                                   instruction="be nice")))
    assert combined.decision == "rewrite"
    assert combined.obligations.instruction == "be nice"
    redactor = combined.obligations.redactor
    assert redactor is not None
    text, counts = redactor.apply("mail a@b.example or call +1 415 555 0100")
    assert counts == {"email": 1, "phone": 1}
    assert "a@b.example" not in text
    only_other = combine(decision("refuse"), decision("allow", obligations=Obligations(
        redactor=phones)))
    assert only_other.obligations.redactor == phones


def test_an_evaluation_error_of_either_is_kept() -> None:
    assert combine(decision("allow"), decision("allow", error="boom")).error == "boom"
    assert combine(decision("refuse", error="mine"), decision("allow", error="x")).error == "mine"


def test_combining_real_policies_tightens_but_never_loosens() -> None:
    strict = dsl.compile_policy(INLINE, filename="<t>")
    loose = dsl.compile_policy('policy v1 "loose" {\n  default allow\n}', filename="<t>")
    facts = dsl.RequestFacts(input_text="a banana please", last_user_text="a banana please")
    classification = dsl.classify(facts.input_text)
    refused = strict.evaluate_input(facts, classification)
    allowed = loose.evaluate_input(facts, classification)
    assert combine(allowed, refused).decision == "refuse"
    assert combine(refused, allowed).decision == "refuse"
    assert combine(allowed, refused).denylist_hits == ("banana",)


# --- Governance ------------------------------------------------------------------------------------


def governance(**changes: Any) -> Governance:
    values: dict[str, Any] = dict(
        policy_id="support_bot", policy_revision=3, policy_name="Support bot",
        data_classification="internal", project_id="proj_a", project_label="A",
        account_id="acct_1", user_id="key:k1", policy_target="chat.completions",
        policy_user=None, quota_subject="key:k1", surface="chat.completions", model="gpt-x",
        stream=False, decision=decision("allow"), enforced=True, rollout_mode="enforced")
    values.update(changes)
    return Governance(**values)


@pytest.mark.parametrize("frame", [
    b'{"id":"c1","object":"chat.completion.chunk","choices":[]}',
    b'{"type": "message_stop"}  \n',
    b"{}",
    b"{ }",
    b'{"nested": {"a": [1, {"b": 2}]}}',
])
def test_with_policy_adds_the_policy_object_as_the_last_key(frame: bytes) -> None:
    gov = governance()
    spliced = gov.with_policy(frame)
    value = orjson.loads(spliced)
    assert value == {**orjson.loads(frame), "policy": gov.policy_object()}
    assert list(value)[-1] == "policy"


@pytest.mark.parametrize("frame", [b"[1, 2]", b'"text"', b"", b"[DONE]", b'{"a": 1'])
def test_with_policy_refuses_what_is_not_a_json_object(frame: bytes) -> None:
    with pytest.raises(ValueError):
        governance().with_policy(frame)


def test_with_policy_follows_a_changed_decision() -> None:
    gov = governance()
    before = orjson.loads(gov.with_policy(b"{}"))["policy"]
    gov.update(decision("refuse", reason_code="INTERNAL_LEAK", stage="output"))
    after = orjson.loads(gov.with_policy(b"{}"))["policy"]
    assert (before["decision"], before["stage"]) == ("allow", "input")
    assert (after["decision"], after["reason_code"], after["stage"],
            after["effective_decision"]) == ("refuse", "INTERNAL_LEAK", "output", "refuse")


def test_the_effective_decision_is_allow_when_not_enforced() -> None:
    gov = governance(decision=decision("refuse"), enforced=False, rollout_mode="shadow")
    policy = gov.policy_object()
    assert (policy["decision"], policy["effective_decision"], policy["enforced"]) == (
        "refuse", "allow", False)


def test_escalation_notices_of_every_policy_that_escalated_are_kept() -> None:
    from gateway.policy.governance import escalation_paths

    project = decision("escalate", obligations=Obligations(escalation_path="oncall"))
    inline = decision("refuse")
    assert combine(project, inline).decision == "refuse"
    assert escalation_paths([project, inline]) == ("oncall",)
    other = decision("escalate", obligations=Obligations(escalation_path="ops@example.com"))
    assert escalation_paths([project, other, project]) == ("oncall", "ops@example.com")


@pytest.mark.parametrize("character", ["\x1b", "\x07", "\x85", "\x9b", "\u202e",
                                       "\u2066", "\u200f", "\u2028", "\u2029", "\x7f"])
@pytest.mark.parametrize(("header", "field"), [("x-policy-user", "policy_user"),
                                               ("x-policy-target", "policy_target")])
def test_labels_refuse_controls_bidi_and_separators(character: str, header: str,
                                                   field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        read_gateway_fields({header: f"alice{character}admin"}, dict(BODY))
    assert caught.value.param == header and header in caught.value.message
    with pytest.raises(InvalidRequest) as caught:
        read_gateway_fields({}, {**BODY, field: f"alice{character}admin"})
    assert caught.value.param == field


def test_labels_keep_ordinary_unicode() -> None:
    fields, _ = read_gateway_fields({}, {**BODY, "policy_user": "Zoë 山田 ‍👩‍💻"})
    assert fields.policy_user == "Zoë 山田 ‍👩‍💻"
