"""The output monitor, tested by exact event sequences."""

from helpers import facts, policy

import dsl

LEAK = '  rule leak { when output contains "nightjar" then refuse reason LEAK }'


def run(compiled: dsl.CompiledPolicy, chunks: list[str], enforced: bool = True):
    request = facts("hi")
    start = compiled.evaluate_input(request, dsl.classify("hi"))
    monitor = dsl.OutputMonitor(compiled, request, start, enforced=enforced)
    events = [monitor.feed(chunk) for chunk in chunks] + [monitor.finish()]
    return [(text, d.decision if d else None, d.reason_code if d else None) for text, d in events]


def test_term_prefix_at_the_end_is_held_and_nothing_else():
    events = run(policy(LEAK), ["Birds: the night", "ingale and the nightj", "ay."])
    assert [text for text, _, _ in events] == ["Birds: the ", "nightingale and the ", "nightjay.",
                                               ""]


def test_window_is_the_longest_term_plus_a_boundary_character():
    assert policy(LEAK).output_window == len("nightjar") + 1
    assert policy('  rule r { when input contains "x" then refuse }').output_window == 0


def test_term_split_across_chunks_is_caught_and_none_of_it_released():
    events = run(policy(LEAK), ["The project is called nigh", "tjar and it is secret."])
    # Only "nigh" could still become the term: the rest is released at once.
    assert events == [("The project is called ", None, None), ("", "refuse", "LEAK"),
                      ("", None, None)]
    released = "".join(text for text, _, _ in events)
    assert "nigh" not in released


def test_clean_stream_is_released_in_full_with_no_decision_change():
    chunks = ["Hello ", "there, ", "how can I help?"]
    events = run(policy(LEAK), chunks)
    # No chunk ends in a prefix of the term: each is released as it comes.
    assert events == [("Hello ", None, None), ("there, ", None, None),
                      ("how can I help?", None, None),
                      ("", "allow", "ALLOW")]  # finish: output rules have now run
    assert "".join(e[0] for e in events) == "".join(chunks)


def test_whole_word_at_the_end_of_a_chunk_waits_for_the_next_character():
    compiled = policy('  list bad = ["ass"]\n  rule r { when output contains any of bad then refuse }')
    events = run(compiled, ["you are an ass", "istant"])
    assert "".join(text for text, _, _ in events) == "you are an assistant"
    assert [d for _, d, _ in events] == [None, None, "allow"]
    assert run(compiled, ["you are an ass", "."])[1] == ("", "refuse", "REFUSE")


def test_not_enforced_keeps_streaming_but_reports_the_decision():
    events = run(policy(LEAK), ["about nightjar and more text"], enforced=False)
    assert events == [("about nightjar and more text", "refuse", "LEAK"), ("", None, None)]


def test_output_redaction_while_streaming():
    compiled = policy('  rule r { when pii email in output then allow redact pii email }')
    chunks = ["Contact bob@exa", "mple.com for help. " + "x" * 300]
    events = run(compiled, chunks)
    released = "".join(text for text, _, _ in events)
    assert released == "Contact [REDACTED:EMAIL] for help. " + "x" * 300
    request = facts("hi")
    monitor = compiled.output_monitor(request, compiled.evaluate_input(request, dsl.classify("hi")))
    decisions = [monitor.feed(chunk)[1] for chunk in chunks] + [monitor.finish()[1]]
    assert decisions[0] is None and decisions[2] is None
    assert (decisions[1].stage, dict(decisions[1].redacted_spans)) == ("output", {"email": 1})


def test_evaluate_output_on_whole_text():
    compiled = policy(LEAK)
    request = facts("hi")
    start = compiled.evaluate_input(request, dsl.classify("hi"))
    decision = compiled.evaluate_output(request, "all about Nightjar", start)
    assert (decision.decision, decision.stage, decision.fired_rules) == ("refuse", "output", ("leak",))
