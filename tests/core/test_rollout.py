"""The rollout engine (docs/policy-language.md): stages, sticky canary sampling and auto-rollback,
on an injected clock. Every outcome is checked exactly; times are chosen against the 10-second
window buckets."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dsl
from gateway.policy.rollout import RevisionEventRequest, RolloutEngine, RolloutOutcome

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"
DECISIONS = ("allow", "rewrite", "summary", "escalate", "refuse")

# threshold 20%, at least 10 decisions, by default a 1-minute window and a 5-minute cooldown.
AUTO = """
    auto_rollback {{
      enabled {enabled}
      threshold_pct 20
      min_requests 10
      window_minutes {window}
      cooldown_minutes {cooldown}
      rollback_decisions {decisions}
    }}"""


def compile_rollout(stages: str, *, auto: bool = True, enabled: bool = True,
                    decisions: str = "refuse", window: int = 1, cooldown: int = 5
                    ) -> dsl.CompiledPolicy:
    block = AUTO.format(enabled=str(enabled).lower(), decisions=decisions, window=window,
                        cooldown=cooldown) if auto else ""
    return dsl.compile_policy(f'policy v1 "pol" {{\n  default allow\n  rollout {{\n{stages}\n'
                              f'{block}\n  }}\n}}\n')


def feed(engine: RolloutEngine, policy: dsl.CompiledPolicy, decisions: list[str], now: float,
         target: str = "t", revision: int = 1) -> list[RolloutOutcome]:
    return [engine.resolve(policy, target=target, quota_subject="u", decision=d, now=now,
                           rand=0.5, revision=revision) for d in decisions]


def at(engine: RolloutEngine, policy: dsl.CompiledPolicy, decision: str, now: float,
       target: str = "t", revision: int = 1) -> RolloutOutcome:
    return feed(engine, policy, [decision], now, target, revision)[0]


# --- stages -------------------------------------------------------------------------------------

@pytest.mark.parametrize("decision", DECISIONS)
def test_shadow_never_enforces(decision: str) -> None:
    policy = compile_rollout("    otherwise shadow", auto=False)
    outcome = at(RolloutEngine(), policy, decision, 0.0)
    assert outcome == RolloutOutcome(rollout_mode="shadow", enforced=False,
                                     effective_decision="allow", stage="shadow")


@pytest.mark.parametrize("decision", DECISIONS)
def test_enforced_always_enforces_the_raw_decision(decision: str) -> None:
    policy = compile_rollout("    otherwise enforced", auto=False)
    outcome = at(RolloutEngine(), policy, decision, 0.0)
    assert outcome == RolloutOutcome(rollout_mode="enforced", enforced=True,
                                     effective_decision=decision, stage="enforced")


def test_a_policy_without_rollout_block_is_enforced_everywhere() -> None:
    policy = dsl.compile_policy('policy v1 "plain" { default allow }')
    outcome = RolloutEngine().resolve(policy, target="anything", quota_subject=None,
                                      decision="refuse", now=0.0, rand=0.0, revision=1)
    assert (outcome.rollout_mode, outcome.enforced, outcome.effective_decision) == (
        "enforced", True, "refuse")


def test_policy_id_defaults_to_the_compiled_policy_id() -> None:
    policy = compile_rollout("    otherwise enforced")
    engine = RolloutEngine()
    feed(engine, policy, ["allow"] * 3, 0.0)
    status = engine.status("pol")
    assert status is not None and (status.revision, status.total) == (1, 3)


# --- canary -------------------------------------------------------------------------------------

SUBJECTS = [f"user-{i}" for i in range(10_000)]


def canary_outcomes(percentage: int, revision: int = 1, rand: float = 0.5) -> list[bool]:
    policy = compile_rollout(f"    otherwise canary {percentage}%", auto=False)
    engine = RolloutEngine()
    outcomes = [engine.resolve(policy, target="t", quota_subject=s, decision="refuse", now=0.0,
                               rand=rand, revision=revision) for s in SUBJECTS]
    assert {o.rollout_mode for o in outcomes} == {"canary"}
    assert {o.stage for o in outcomes} == {f"canary {percentage}%"}
    assert all(o.effective_decision == ("refuse" if o.enforced else "allow") for o in outcomes)
    return [o.enforced for o in outcomes]


@pytest.mark.parametrize("percentage", [10, 50])
def test_canary_enforces_close_to_its_percentage(percentage: int) -> None:
    share = 100 * sum(canary_outcomes(percentage)) / len(SUBJECTS)
    assert abs(share - percentage) <= 2


@pytest.mark.parametrize("percentage", [10, 50])
def test_canary_is_sticky_per_subject_and_ignores_rand(percentage: int) -> None:
    # rand at both extremes: with a subject, only the subject's hash may matter.
    first = canary_outcomes(percentage, rand=0.0)
    assert canary_outcomes(percentage, rand=0.999) == first
    assert canary_outcomes(percentage, rand=0.5) == first


def test_a_new_revision_resamples_the_canary() -> None:
    old, new = canary_outcomes(50, revision=1), canary_outcomes(50, revision=2)
    flipped = sum(a != b for a, b in zip(old, new, strict=True))
    # independent 50% samples disagree for about half the subjects
    assert 4000 <= flipped <= 6000
    assert abs(100 * sum(new) / len(SUBJECTS) - 50) <= 2


@pytest.mark.parametrize(("subject", "rand", "enforced"), [
    (None, 0.0, True), (None, 0.0999, True), (None, 0.1, False), (None, 0.9, False),
    ("", 0.05, True), ("", 0.5, False),
])
def test_subjectless_canary_follows_rand(subject: str | None, rand: float, enforced: bool) -> None:
    policy = compile_rollout("    otherwise canary 10%", auto=False)
    outcome = RolloutEngine().resolve(policy, target="t", quota_subject=subject,
                                      decision="escalate", now=0.0, rand=rand, revision=1)
    assert (outcome.rollout_mode, outcome.enforced, outcome.effective_decision) == (
        "canary", enforced, "escalate" if enforced else "allow")


# --- per-target stages --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def staged() -> dsl.CompiledPolicy:
    path = REPO_POLICIES / "jailbreak_filter.pol"
    return dsl.compile_policy(path.read_text(), filename=str(path))


@pytest.mark.parametrize(("target", "mode", "stage"), [
    ("internal-tools", "enforced", "enforced"),
    ("mobile-app", "canary", "canary 10%"),
    ("support-bot", "shadow", "shadow"),
    ("chat.completions", "shadow", "shadow"),
])
def test_staged_rollout_gives_each_target_its_stage(staged: dsl.CompiledPolicy, target: str,
                                                    mode: str, stage: str) -> None:
    outcome = RolloutEngine().resolve(staged, target=target, quota_subject=None, decision="refuse",
                                      now=0.0, rand=0.05, revision=1)
    # rand 0.05 is inside the 10% canary, so every non-shadow stage enforces here
    assert (outcome.rollout_mode, outcome.stage, outcome.enforced) == (
        mode, stage, mode != "shadow")


def test_staged_rollout_mobile_canary_samples_ten_percent(staged: dsl.CompiledPolicy) -> None:
    engine = RolloutEngine()
    enforced = [engine.resolve(staged, target="mobile-app", quota_subject=s, decision="allow",
                               now=0.0, rand=0.0, revision=1).enforced for s in SUBJECTS]
    assert abs(100 * sum(enforced) / len(SUBJECTS) - 10) <= 2


# --- auto-rollback ------------------------------------------------------------------------------

def test_min_requests_boundary() -> None:
    policy = compile_rollout("    otherwise enforced")
    engine = RolloutEngine()
    before = feed(engine, policy, ["refuse"] * 9, 0.0)
    assert [(o.rollout_mode, o.enforced, o.events) for o in before] == [
        ("enforced", True, ())] * 9
    tripping = at(engine, policy, "refuse", 1.0)
    assert tripping == RolloutOutcome(
        rollout_mode="rollback", enforced=False, effective_decision="allow", stage="enforced",
        events=(RevisionEventRequest(edit_type="auto_rollback", policy_id="pol", revision=1,
                                     at=1.0, share_pct=100.0, matching=10, total=10,
                                     reason="threshold_exceeded"),))


def test_threshold_boundary_exactly_at_threshold_does_not_trip() -> None:
    policy = compile_rollout("    otherwise enforced")
    engine = RolloutEngine()
    # 40 allows + 10 refuses = exactly 20%: not above the threshold
    outcomes = feed(engine, policy, ["allow"] * 40 + ["refuse"] * 10, 5.0)
    assert {(o.rollout_mode, o.events) for o in outcomes} == {("enforced", ())}
    tripping = at(engine, policy, "refuse", 6.0)  # 11/51 > 20%
    assert tripping.rollout_mode == "rollback"
    assert [(e.edit_type, e.matching, e.total) for e in tripping.events] == [
        ("auto_rollback", 11, 51)]
    assert tripping.events[0].share_pct == pytest.approx(100 * 11 / 51)


def test_only_rollback_decisions_count() -> None:
    policy = compile_rollout("    otherwise enforced", decisions="refuse, escalate")
    engine = RolloutEngine()
    outcomes = feed(engine, policy, ["rewrite", "summary"] * 20, 0.0)  # 0 of 40 count
    outcomes += feed(engine, policy, ["escalate"] * 5 + ["refuse"] * 5, 1.0)  # 10/50 = 20%
    assert {o.rollout_mode for o in outcomes} == {"enforced"}
    assert at(engine, policy, "escalate", 2.0).rollout_mode == "rollback"


def test_rollback_cooldown_and_end() -> None:
    policy = compile_rollout('    target "hot" enforced\n    target "side" canary 50%\n'
                             "    otherwise shadow")
    engine = RolloutEngine()
    feed(engine, policy, ["refuse"] * 9, 100.0, target="hot")
    tripped = at(engine, policy, "refuse", 100.0, target="hot")
    assert [e.edit_type for e in tripped.events] == ["auto_rollback"]
    end = 100.0 + 5 * 60

    during = [at(engine, policy, d, now, target=t)
              for now in (100.0, 200.0, end - 0.001)
              for t in ("hot", "side", "other") for d in ("refuse", "allow")]
    assert {(o.rollout_mode, o.enforced, o.effective_decision, o.events) for o in during} == {
        ("rollback", False, "allow", ())}
    assert [o.stage for o in during[:6]] == [
        "enforced", "enforced", "canary 50%", "canary 50%", "shadow", "shadow"]

    first_after = at(engine, policy, "refuse", end, target="hot")
    assert first_after == RolloutOutcome(
        rollout_mode="enforced", enforced=True, effective_decision="refuse", stage="enforced",
        events=(RevisionEventRequest(edit_type="rollback_end", policy_id="pol", revision=1,
                                     at=end, share_pct=100.0, matching=10, total=10,
                                     reason="cooldown_elapsed"),))
    # the window starts empty after the cooldown: 8 more refuses make 9, still below min_requests
    later = feed(engine, policy, ["refuse"] * 8, end + 1, target="hot")
    assert {(o.rollout_mode, o.events) for o in later} == {("enforced", ())}
    assert at(engine, policy, "refuse", end + 2, target="hot").rollout_mode == "rollback"


def test_the_window_starts_empty_after_a_cooldown_shorter_than_the_window() -> None:
    policy = compile_rollout("    otherwise enforced", window=10, cooldown=1)
    engine = RolloutEngine()
    assert feed(engine, policy, ["refuse"] * 10, 0.0)[-1].rollout_mode == "rollback"
    # the 10 refusals that tripped it are still inside the 10-minute window, yet forgotten
    after = feed(engine, policy, ["refuse"] * 9, 60.0)
    assert [(o.rollout_mode, [e.edit_type for e in o.events]) for o in after] == [
        ("enforced", ["rollback_end"])] + [("enforced", [])] * 8
    assert at(engine, policy, "refuse", 61.0).rollout_mode == "rollback"


def test_status_reports_the_window_and_the_cooldown() -> None:
    policy = compile_rollout("    otherwise enforced")
    engine = RolloutEngine()
    assert engine.status("pol") is None
    feed(engine, policy, ["refuse", "allow", "allow"], 0.0)
    feed(engine, policy, ["allow"], 15.0)
    status = engine.status("pol")
    assert status is not None
    assert (status.matching, status.total, status.buckets, status.rollback_until) == (
        1, 4, 2, None)
    feed(engine, policy, ["refuse"] * 6, 20.0)  # 7/10
    status = engine.status("pol")
    assert status is not None and status.rollback_until == 20.0 + 300


@pytest.mark.parametrize(("later", "trips"), [(69.9, True), (70.0, False)])
def test_old_refusals_slide_out_of_the_window(later: float, trips: bool) -> None:
    # window 60 s in 10 s buckets: an observation at t=0 stays until t=70 (never leaves early)
    policy = compile_rollout("    otherwise enforced")
    engine = RolloutEngine()
    feed(engine, policy, ["refuse"] * 9, 0.0)
    assert at(engine, policy, "refuse", later).rollout_mode == ("rollback" if trips else "enforced")


@pytest.mark.parametrize(("later", "trips"), [(69.9, False), (70.0, True)])
def test_old_allows_slide_out_of_the_window(later: float, trips: bool) -> None:
    policy = compile_rollout("    otherwise enforced")
    engine = RolloutEngine()
    feed(engine, policy, ["allow"] * 50, 0.0)
    # with the 50 allows still counted, 10 refuses are 10/60 < 20%; without them 10/10
    outcomes = feed(engine, policy, ["refuse"] * 10, later)
    assert [o.rollout_mode for o in outcomes] == ["enforced"] * 9 + [
        "rollback" if trips else "enforced"]


def test_shadow_traffic_does_not_count() -> None:
    policy = compile_rollout('    target "hot" enforced\n    otherwise shadow')
    engine = RolloutEngine()
    shadow = feed(engine, policy, ["refuse"] * 100, 0.0, target="elsewhere")
    assert {(o.rollout_mode, o.events) for o in shadow} == {("shadow", ())}
    hot = feed(engine, policy, ["refuse"] * 10, 1.0, target="hot")
    assert [o.rollout_mode for o in hot] == ["enforced"] * 9 + ["rollback"]


def test_canary_traffic_counts_whether_sampled_in_or_not() -> None:
    policy = compile_rollout("    otherwise canary 10%")
    engine = RolloutEngine()
    outcomes = [engine.resolve(policy, target="t", quota_subject=None, decision="refuse",
                               now=0.0, rand=0.99, revision=1) for _ in range(10)]
    assert [(o.rollout_mode, o.enforced) for o in outcomes] == [("canary", False)] * 9 + [
        ("rollback", False)]


def test_disabled_auto_rollback_never_trips() -> None:
    policy = compile_rollout("    otherwise enforced", enabled=False)
    outcomes = feed(RolloutEngine(), policy, ["refuse"] * 200, 0.0)
    assert {(o.rollout_mode, o.events) for o in outcomes} == {("enforced", ())}


def test_a_new_revision_ends_the_old_rollback_and_starts_fresh() -> None:
    policy = compile_rollout("    otherwise enforced")
    engine = RolloutEngine()
    assert feed(engine, policy, ["refuse"] * 10, 0.0)[-1].rollout_mode == "rollback"
    outcome = at(engine, policy, "refuse", 30.0, revision=2)
    assert (outcome.rollout_mode, outcome.events) == ("enforced", (RevisionEventRequest(
        edit_type="rollback_end", policy_id="pol", revision=1, at=30.0, share_pct=100.0,
        matching=10, total=10, reason="revision_replaced"),))
    assert at(engine, policy, "refuse", 31.0, revision=2).events == ()


def test_window_memory_is_bounded_by_buckets_not_requests() -> None:
    policy = compile_rollout("    otherwise enforced")
    engine = RolloutEngine()
    for second in range(0, 3600, 2):  # one hour, 5 requests every 2 s, never tripping
        feed(engine, policy, ["allow"] * 5, float(second))
    status = engine.status("pol")
    assert status is not None
    assert status.buckets == 7  # 60 s window / 10 s buckets, plus the current one
    # the last instant is 3598 s (bucket 359): buckets 353..359 hold 5 instants x 5 requests
    assert status.total == 7 * 25


# --- properties ---------------------------------------------------------------------------------

steps = st.lists(st.tuples(
    st.sampled_from(("refuse",) * 4 + DECISIONS),  # refusals often enough to trip rollbacks
    # time steps: mostly none or small (negative = the clock went backwards), sometimes a jump
    # past the window or the cooldown
    st.sampled_from(("same",) * 3 + ("small",) * 5 + ("jump",)).flatmap(lambda kind: {
        "same": st.just(0.0), "small": st.floats(min_value=-5.0, max_value=5.0),
        "jump": st.floats(min_value=0.0, max_value=400.0)}[kind]),
    st.sampled_from(["hot", "hot", "side", "other"]),
    st.one_of(st.none(), st.text(max_size=4)),
    st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    st.sampled_from((False,) * 30 + (True,)),  # a new policy revision now and then
    st.integers(min_value=1, max_value=20),  # a burst of this many identical requests
), max_size=60)


@settings(max_examples=200, deadline=None)
@given(steps=steps, decisions=st.sampled_from(["refuse", "refuse, escalate", "allow"]))
def test_random_sequences_keep_the_invariants(
        steps: list[tuple[str, float, str, str | None, float, bool, int]], decisions: str) -> None:
    policy = compile_rollout('    target "hot" enforced\n    target "side" canary 30%\n'
                             "    otherwise shadow", decisions=decisions)
    engine = RolloutEngine()
    now, revision, in_rollback, edit_types = 1000.0, 1, False, []
    requests = [(decision, step, target, subject, rand, new_revision)
                for decision, step, target, subject, rand, new_revision, burst in steps
                for _ in range(burst)]
    for decision, step, target, subject, rand, new_revision in requests:
        now += step
        revision += new_revision
        outcome = engine.resolve(policy, target=target, quota_subject=subject, decision=decision,
                                 now=now, rand=rand, revision=revision)
        assert outcome.effective_decision == (decision if outcome.enforced else "allow")
        assert outcome.rollout_mode in ("shadow", "canary", "enforced", "rollback")
        if outcome.rollout_mode in ("shadow", "rollback"):
            assert not outcome.enforced
        if outcome.rollout_mode == "enforced":
            assert outcome.enforced
        for event in outcome.events:
            edit_types.append(event.edit_type)
            in_rollback = event.edit_type == "auto_rollback"
        assert (outcome.rollout_mode == "rollback") == in_rollback
        status = engine.status("pol")
        assert status is not None and status.buckets <= 7
    # rollbacks and their ends alternate, starting with a rollback
    assert edit_types == ["auto_rollback", "rollback_end"] * (len(edit_types) // 2) + (
        ["auto_rollback"] if len(edit_types) % 2 else [])
