"""The governed request lifecycle (gateway/policy/lifecycle.py), with no server: every way a
request can end, as exact effect sequences, and "exactly one event" as a property."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import InvalidTransition
from gateway.policy.lifecycle import (
    Phase,
    Record,
    Release,
    RequestLifecycle,
    Settle,
    StreamCounts,
    stream_usage,
)


def admitted(estimate: int = 0) -> RequestLifecycle:
    lifecycle = RequestLifecycle(estimated_input_tokens=estimate)
    assert lifecycle.admitted() == []
    return lifecycle


def streaming(estimate: int = 0) -> RequestLifecycle:
    lifecycle = admitted(estimate)
    assert lifecycle.upstream_called() == []
    assert lifecycle.stream_started() == []
    return lifecycle


def test_quota_refusal_records_without_touching_a_reservation():
    lifecycle = RequestLifecycle()
    assert lifecycle.quota_refused() == [Record(429, "quota_exceeded", 0, 0)]
    assert lifecycle.phase is Phase.DONE


def test_policy_refusal_before_the_upstream_releases_then_records():
    lifecycle = admitted()
    assert lifecycle.finish(403, "refused") == [Release(), Record(403, "refused", 0, 0)]


def test_escalation_releases_then_records():
    lifecycle = admitted()
    assert lifecycle.finish(200, "escalated") == [Release(), Record(200, "escalated", 0, 0)]


def test_whole_answer_settles_the_reported_usage():
    lifecycle = admitted()
    lifecycle.upstream_called()
    assert lifecycle.finish(200, "completed", 12, 30) == [
        Settle(12, 30), Record(200, "completed", 12, 30)]


def test_output_refusal_of_a_whole_answer_still_charges_what_was_used():
    lifecycle = admitted()
    lifecycle.upstream_called()
    assert lifecycle.finish(403, "refused", 10, 5) == [Settle(10, 5), Record(403, "refused", 10, 5)]


def test_upstream_error_before_the_first_byte_releases():
    lifecycle = admitted()
    lifecycle.upstream_called()
    assert lifecycle.finish(502, "upstream_error") == [
        Release(), Record(502, "upstream_error", 0, 0)]


def test_client_gone_while_waiting_for_the_upstream_is_charged_the_input_estimate():
    # Leaving before the answer's head must not give the request back: the upstream has it.
    lifecycle = admitted(estimate=40)
    lifecycle.upstream_called()
    assert lifecycle.finish(499, "client_disconnected") == [
        Settle(40, 0), Record(499, "client_disconnected", 40, 0)]


def test_client_gone_before_the_upstream_was_called_releases():
    lifecycle = admitted(estimate=40)
    assert lifecycle.finish(499, "client_disconnected") == [
        Release(), Record(499, "client_disconnected", 0, 0)]


def test_an_answer_without_usage_still_counts_the_request():
    lifecycle = admitted(estimate=9)
    lifecycle.upstream_called()
    assert lifecycle.finish(200, "completed") == [Settle(9, 0), Record(200, "completed", 9, 0)]


def test_shutdown_cut_of_a_whole_answer_releases():
    lifecycle = admitted()
    lifecycle.upstream_called()
    assert lifecycle.finish(503, "shutdown") == [Release(), Record(503, "shutdown", 0, 0)]


def test_completed_stream_settles_reported_usage():
    lifecycle = streaming(estimate=50)
    counts = StreamCounts(input_tokens=40, output_tokens=9, usage_reported=True, output_chars=36)
    assert lifecycle.finish_stream(200, "completed", counts) == [
        Settle(40, 9), Record(200, "completed", 40, 9)]


def test_upstream_error_after_the_first_byte_charges_the_estimate_and_what_streamed():
    lifecycle = streaming(estimate=50)
    counts = StreamCounts(output_chars=41)  # no usage reported: 41 chars is 11 tokens, rounded up
    assert lifecycle.finish_stream(502, "upstream_error", counts) == [
        Settle(50, 11), Record(502, "upstream_error", 50, 11)]


def test_client_gone_mid_stream_and_then_the_server_closing_it_records_once():
    lifecycle = streaming(estimate=8)
    first = lifecycle.finish_stream(499, "client_disconnected", StreamCounts(output_chars=4))
    assert first == [Settle(8, 1), Record(499, "client_disconnected", 8, 1)]
    assert lifecycle.finish_stream(499, "client_disconnected", StreamCounts()) == []
    assert lifecycle.finish(500, "internal_error") == []


def test_stream_stopped_by_an_output_rule_is_settled():
    lifecycle = streaming(estimate=20)
    counts = StreamCounts(input_tokens=20, output_tokens=0, usage_reported=True, output_chars=8)
    assert lifecycle.finish_stream(200, "refused", counts) == [
        Settle(20, 2), Record(200, "refused", 20, 2)]


def test_stream_usage_keeps_reported_figures_when_complete():
    counts = StreamCounts(input_tokens=3, output_tokens=4, usage_reported=True, output_chars=400)
    assert stream_usage(counts, "completed", 99) == (3, 4)


@pytest.mark.parametrize("event", ["admitted", "stream_started", "quota_refused"])
def test_events_out_of_order_are_refused(event):
    lifecycle = admitted()
    lifecycle.upstream_called()
    lifecycle.stream_started()
    with pytest.raises(InvalidTransition):
        getattr(lifecycle, event)()


def test_a_request_cannot_end_before_admission_except_by_quota():
    with pytest.raises(InvalidTransition):
        RequestLifecycle().finish(500, "internal_error")


_ENDINGS = st.sampled_from([
    ("finish", (200, "completed", 1, 1)), ("finish", (499, "client_disconnected", 0, 0)),
    ("finish", (502, "upstream_error", 0, 0)), ("finish", (403, "refused", 0, 0)),
    ("finish_stream", (200, "completed", StreamCounts(1, 1, True, 4))),
    ("finish_stream", (499, "client_disconnected", StreamCounts())),
])


@given(progress=st.integers(min_value=0, max_value=2), endings=st.lists(_ENDINGS, min_size=1,
                                                                        max_size=5))
def test_every_path_records_exactly_one_event_and_charges_once(progress, endings):
    lifecycle = admitted()
    steps = [lifecycle.upstream_called, lifecycle.stream_started][:progress]
    for step in steps:
        step()
    effects = []
    for name, args in endings:
        if name == "finish_stream" and lifecycle.phase is not Phase.STREAMING \
                and lifecycle.phase is not Phase.DONE:
            continue  # a stream can only end once it started
        effects += getattr(lifecycle, name)(*args)
    if lifecycle.phase is not Phase.DONE:  # every ending was a stream ending: end it plainly
        effects += lifecycle.finish(500, "internal_error")
    assert [type(e) for e in effects].count(Record) == 1
    assert len([e for e in effects if isinstance(e, Release | Settle)]) == 1
    assert isinstance(effects[-1], Record) and effects[-1] == lifecycle.recorded
