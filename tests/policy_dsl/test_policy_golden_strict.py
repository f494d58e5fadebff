"""Golden cases cannot pass vacuously: typos, unknown names and empty runs fail `dsl test`."""

import json
from pathlib import Path

import pytest
from helpers import policy

from dsl.__main__ import main
from dsl.golden import run_cases
from dsl.rollout_outcome import resolve
from gateway.policy.rollout import RolloutEngine

POLICIES = Path(__file__).resolve().parents[2] / "policies"
POL = ('policy v1 "p" {\n  list bad = ["boom"]\n'
       '  rule r { when input contains any of bad then refuse }\n}\n')


def run(cases: list[object], body: str = 'list bad = ["boom"]\n'
        'rule r { when input contains any of bad then refuse }') -> list[tuple[str, ...]]:
    return [r.problems for r in run_cases(policy(body), cases)]


@pytest.mark.parametrize(("case", "problem"), [
    ({"txt": "boom", "expect": {"decision": "allow"}},
     "unknown key `txt`; did you mean `text`? (case)"),
    ({"request": {"txt": "boom"}, "expect": {"decision": "allow"}},
     "unknown key `txt`; did you mean `text`? in `request`"),
    ({"text": "boom", "expect": {"decison": "refuse"}},
     "unknown expectation `decison`; did you mean `decision`? in `expect`"),
    ({"text": "x", "category_scores": {"hate/threat": 0.9}, "expect": {"decision": "allow"}},
     "unknown category `hate/threat`; did you mean `hate/threatening`? in `category_scores`"),
    ({"text": "x", "category_scores": {"hate": 2}, "expect": {"decision": "allow"}},
     "score of 'hate' must be a number from 0 to 1"),
    ({"text": "x", "flagged_categories": ["violense"], "expect": {"decision": "allow"}},
     "unknown category `violense`; did you mean `violence`? in `flagged_categories`"),
    ({"text": "x", "expect": {"redactions": {"emial": 1}}},
     "unknown PII kind `emial`; did you mean `email`? in `expect.redactions`"),
    ({"text": "x", "expect": {"triggered_categories": ["sexual/minor"]}},
     "unknown category `sexual/minor`; did you mean `sexual/minors`? in "
     "`expect.triggered_categories`"),
    ({"text": "boom", "expect": {"fired_rules": ["rr"]}},
     "unknown rule `rr`; did you mean `r`? in `expect.fired_rules`"),
    ({"text": "x", "expect": {"decision": "deny"}},
     "unknown `expect.decision` value `deny`; known: `allow`, `escalate`, `refuse`, `rewrite`, "
     "`summary`"),
    ({"text": "x", "expect": {"rollout_mode": "canery"}},
     "unknown `expect.rollout_mode` value `canery`; did you mean `canary`?"),
    ({"text": "x", "has_tools": "yes", "expect": {"decision": "allow"}},
     "`has_tools` must be a bool, got str"),
    ({"text": "x", "messages": [{"role": "usr", "content": "hi"}], "expect": {}},
     "unknown role `usr`; did you mean `user`? in `messages[0]`"),
    ({"text": "x"}, "case has no `expect`"),
    ({"text": "x", "request": {"model": "m"}, "expect": {}},
     "request facts are both in `request` and at the top of the case; keep them in one place"),
])
def test_a_mistake_in_a_case_fails_it_with_a_clear_message(case, problem):
    assert run([case]) == [(problem,)]


def test_pinned_scores_apply_to_the_text_the_rule_reads():
    body = ('rule sh { when category "self-harm/intent" >= 0.4 in last_user then escalate }\n'
            'escalation_path "https://example.com/x"')
    cases = [{"messages": [{"role": "user", "content": "hello"}],
              "category_scores": {"self-harm/intent": 0.5},
              "expect": {"decision": "escalate", "fired_rules": ["sh"]}},
             {"text": "hello", "expect": {"decision": "allow"}}]
    assert run(cases, body) == [(), ()]


def test_expect_stage_still_works_with_a_deprecation_warning():
    results = run_cases(policy('list bad = ["boom"]\n'
                               'rule r { when input contains any of bad then refuse }'),
                        [{"text": "boom", "expect": {"stage": "input"}},
                         {"text": "boom", "expect": {"decided_at": "input"}}])
    assert [r.problems for r in results] == [(), ()]
    assert "`expect.stage` is deprecated: write `expect.decided_at`" in results[0].warnings[0]
    assert results[1].warnings == ()


def test_a_canary_case_without_user_or_sample_says_what_is_missing():
    body = ('list bad = ["boom"]\nrule r { when input contains any of bad then refuse }\n'
            'rollout { otherwise canary 50% }')
    problems = run([{"text": "boom", "expect": {"enforced": True}}], body)
    assert problems == [("target 'chat.completions' is a canary: give `policy_user` (sticky "
                         "sample) or `sample` (0..1) to decide whether it is enforced",)]


def test_rollout_expectations_are_checked():
    body = ('list bad = ["boom"]\nrule r { when input contains any of bad then refuse }\n'
            'rollout { target "web" shadow }')
    assert run([{"text": "boom", "target": "web",
                 "expect": {"rollout_mode": "enforced", "effective_decision": "refuse"}}],
               body) == [("rollout_mode: expected 'enforced', got 'shadow'",
                          "effective_decision: expected 'refuse', got 'allow'")]


@pytest.mark.parametrize("stage", ["shadow", "enforced", "canary 30%"])
@pytest.mark.parametrize("auto", ["", "auto_rollback { enabled true min_requests 1 "
                                      "threshold_pct 50 }"])
def test_rollout_resolution_agrees_with_a_fresh_gateway_engine(stage, auto):
    compiled = policy(f'rollout {{ target "t" {stage} {auto} }}', policy_id="agree")
    for index in range(40):
        user = f"user-{index}" if index % 4 else None
        for decision in ("allow", "refuse"):
            gateway = RolloutEngine().resolve(compiled, target="t", quota_subject=user,
                                              decision=decision, now=0.0, rand=index / 40,
                                              revision=3)
            ours = resolve(compiled.rollout, policy_id="agree", target="t", subject=user,
                           decision=decision, revision=3, sample=index / 40)
            assert (ours.rollout_mode, ours.enforced, ours.effective_decision,
                    ours.rollout_stage) == (gateway.rollout_mode, gateway.enforced,
                                            gateway.effective_decision, gateway.stage)


def test_cli_test_fails_on_an_empty_run_unless_allowed(tmp_path, capsys):
    (tmp_path / "p.pol").write_text(POL)
    assert main(["test", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert f"no cases: {tmp_path / 'p.pol'} (add p.cases.json)" in captured.out
    assert captured.out.strip().splitlines()[-1] == "0 passed, 0 failed"
    assert "no golden cases ran" in captured.err
    assert main(["test", "--allow-empty", str(tmp_path)]) == 0


def test_cli_test_lists_policies_without_cases_beside_ones_with_cases(tmp_path, capsys):
    (tmp_path / "p.pol").write_text(POL)
    (tmp_path / "q.pol").write_text(POL.replace('"p"', '"q"'))
    (tmp_path / "p.cases.json").write_text(json.dumps({"cases": [
        {"text": "boom", "expect": {"decision": "refuse"}}]}))
    assert main(["test", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"no cases: {tmp_path / 'q.pol'}" in out and "no cases: " + str(tmp_path / "p.pol") \
        not in out


def test_cli_test_reports_a_broken_cases_file(tmp_path, capsys):
    (tmp_path / "p.pol").write_text(POL)
    (tmp_path / "p.cases.json").write_text(json.dumps({"case": []}))
    assert main(["test", str(tmp_path)]) == 1
    assert "FAIL p.cases.json: unknown key `case`; did you mean `cases`? (in the cases file)" in (
        capsys.readouterr().out)


def test_cli_coverage_lists_rules_no_case_fired(tmp_path, capsys):
    (tmp_path / "p.pol").write_text(POL.replace(
        "}\n}", '}\n  rule other { when input contains "zap" then refuse }\n}'))
    (tmp_path / "p.cases.json").write_text(json.dumps({"cases": [
        {"text": "boom", "expect": {"decision": "refuse"}}]}))
    assert main(["test", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["test", "--coverage", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"not fired: {tmp_path / 'p.pol'}: other" in out
    assert "coverage: 1 rule(s) no case fired" in out


def test_shipped_example_policies_reach_full_rule_coverage(capsys):
    assert main(["test", "--coverage", str(POLICIES)]) == 0
    out = capsys.readouterr().out
    assert "coverage: every rule fired" in out and "not fired" not in out


@pytest.mark.parametrize(("case", "message"), [
    ({"txt": "boom", "expect": {"decision": "allow"}}, "unknown key `txt`; did you mean `text`?"),
    ({"text": "x", "category_scores": {"hat": 0.9}, "expect": {"decision": "allow"}},
     "unknown category `hat`; did you mean `hate`?"),
    ({"text": "x", "expect": {"redactions": {"phnoe": 1}}},
     "unknown PII kind `phnoe`; did you mean `phone`?"),
])
def test_cli_test_run_fails_on_a_strictness_error(tmp_path, capsys, case, message):
    (tmp_path / "p.pol").write_text(POL)
    (tmp_path / "p.cases.json").write_text(json.dumps({"cases": [{"name": "c", **case}]}))
    assert main(["test", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL p.pol: c" in out and message in out
    assert out.strip().splitlines()[-1] == "0 passed, 1 failed"
