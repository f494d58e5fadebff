"""The text form of `python -m gateway usage`: one line a counter, a placeholder when a subject
has none, users quoted (their ids come from callers)."""

from gateway.cli.usage import _usage_text


def test_usage_text_lists_each_counter_and_each_user():
    counter = {"unit": "requests", "window": "daily", "used": 3, "limit": 10,
               "reset_at": "2026-01-02T00:00:00Z"}
    report = {"at": "2026-01-01T12:00:00Z", "project": [counter],
              "users": [{"quota_subject": "alice", "counters": [{**counter, "limit": None}]},
                        {"quota_subject": "bob", "counters": []}]}
    assert _usage_text("proj_a", report).splitlines() == [
        "project proj_a at 2026-01-01T12:00:00Z",
        "  requests daily               3 / 10           resets 2026-01-02T00:00:00Z",
        "user 'alice'",
        "  requests daily               3 / -            resets 2026-01-02T00:00:00Z",
        "user 'bob'",
        "  (no usage in the current windows)",
    ]
