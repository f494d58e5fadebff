"""One test per diagnostic class: exact file:line:col, message and hint."""

import pytest

import dsl


def diags(body: str) -> list[tuple[int, int, str, str, str | None]]:
    source = f'policy v1 "t" {{\n{body}\n}}\n'
    return [(d.line, d.column, d.severity, d.message, d.hint)
            for d in dsl.check(source, filename="t.pol")]


def errors(body: str):
    return [d for d in diags(body) if d[2] == "error"]


def test_valid_policy_has_no_diagnostics():
    assert diags('  denylist bad = ["x"]\n  rule r { when input contains any of bad then refuse }') == []


def test_every_syntax_error_region_is_reported_and_good_statements_still_checked():
    found = errors('  rule a { when = then refuse }\n'
                   '  list x = [ "a" "b" ]\n'
                   '  default alow\n'
                   '  rule b { then }')
    assert [(line, col) for line, col, *_ in found] == [(2, 17), (3, 18), (4, 11), (5, 17)]
    assert found[0][3] == "syntax error: unexpected `=`"
    assert found[1][4] == "expected `,`, `]`"
    assert found[2][3:] == ("unknown decision `alow`", "did you mean `allow`?")


def test_unclosed_block_reports_end_of_file():
    found = dsl.check('policy v1 "t" {\n  rule r {\n    when stream then refuse\n', "t.pol")
    assert [(d.line, d.message) for d in found] == [(3, "unexpected end of file")]


def test_unknown_names_say_did_you_mean():
    found = errors('  list words = ["a"]\n  rule r { when inptu contains any of wordz and modle == "x" '
                   'and pii emial and category "hat" then refuse }')
    assert [(c, m, h) for _, c, _, m, h in found] == [
        (17, "unknown text `inptu`", "did you mean `input`?"),
        (39, "unknown list `wordz`", "did you mean `words`?"),
        (49, "unknown field `modle`", "did you mean `model`?"),
        (70, "unknown PII kind `emial`", "did you mean `email`?"),
        (89, "unknown category 'hat'", "did you mean `hate`?"),
    ]


@pytest.mark.parametrize(("condition", "column", "message"), [
    ('model == 3', 17, "type mismatch: `model` is a string, compared with a number"),
    ('message_count == "many"', 17, "type mismatch: `message_count` is a number, compared with a string"),
    ('input matches "x*"', 31, "texts take a /regex/, not a \"glob\""),
    ('model contains "x"', 17, "`model` is a request field, not a text"),
    ('message_count', 17, "`message_count` is a number; this test needs a bool"),
])
def test_type_errors(condition, column, message):
    found = errors(f"  rule r {{ when {condition} then refuse }}")
    assert [(line, col, msg) for line, col, _, msg, _ in found] == [(2, column, message)]


def test_ordering_a_bool_reports_the_operator_once():
    found = errors("  rule r { when stream > 1 then refuse }\n"
                   "  rule s { when model > 5 then refuse }")
    assert [msg for *_, msg, _ in found] == [
        "`>` needs a number; `stream` is a bool", "`>` needs a number; `model` is a string"]


def test_duplicates():
    found = errors('  default allow\n  default refuse\n  list a = ["x"]\n  list a = ["y"]\n'
                   '  rule r { when input contains any of a then refuse }\n'
                   '  rule r { when stream then refuse }')
    assert [(line, col, msg, hint) for line, col, _, msg, hint in found] == [
        (3, 3, "`default` is set twice", "first set at line 2; keep one"),
        (5, 8, "duplicate list `a`", "first declared at line 4; rename one of them"),
        (7, 8, "duplicate rule `r`", "first defined at line 6; rename one of them"),
    ]


def test_rules_that_can_never_fire():
    found = diags('  list empty = []\n'
                  '  rule a { when model == "x" and model == "y" then refuse }\n'
                  '  rule b { when message_count > 10 and message_count < 5 then refuse }\n'
                  '  rule c { when stream and not stream then refuse }\n'
                  '  rule d { when input contains any of empty then refuse }\n'
                  '  rule e { when stream then allow }')
    assert [(line, col, sev, msg) for line, col, sev, msg, _ in found] == [
        (2, 3, "warning", "list `empty` is empty"),
        (3, 34, "error", 'rule `a` can never fire: `model` cannot be both "x" and "y"'),
        (4, 17, "error", "rule `b` can never fire: the bounds on `message_count` leave no possible value"),
        (5, 32, "error", "rule `c` can never fire: `stream` cannot be both true and false"),
        (6, 39, "warning", "list `empty` is empty"),
        (7, 29, "warning", "rule `e` has no effect"),
    ]


def test_non_linear_regex_is_rejected_with_hint():
    found = errors('  rule r { when input matches /(a+)\\1/ or input matches /(?=x)y/ then refuse }')
    assert [(col, msg) for _, col, _, msg, _ in found] == [
        (17, "pattern is not a linear-time (RE2) regex: invalid escape sequence: \\1"),
        (43, "pattern is not a linear-time (RE2) regex: invalid perl operator: (?="),
    ]
    assert found[0][4].startswith("RE2 has no backreferences or lookaround")


def test_limits_on_pattern_and_list_size(monkeypatch):
    import dsl.checker

    monkeypatch.setattr(dsl.checker, "MAX_TERMS_PER_LIST", 3)
    long_pattern = "a" * 1001
    found = errors(f'  list big = ["a", "b", "c", "d"]\n'
                   f'  rule r {{ when input contains any of big or input matches /{long_pattern}/ '
                   f'then refuse }}')
    assert [(line, col, msg) for line, col, _, msg, _ in found] == [
        (2, 3, "list `big` has 4 terms"),
        (3, 46, "pattern longer than 1000 characters"),
    ]


def test_action_options_are_checked():
    found = errors('  rule r { when stream then rewrite message "x" reason lower_case }\n'
                   '  rule s { when stream then escalate }')
    assert [(line, col, msg) for line, col, _, msg, _ in found] == [
        (2, 45, "`message` is for refuse and escalate, not rewrite"),
        (2, 56, "reason code `lower_case` is not UPPER_SNAKE_CASE"),
        (3, 29, "escalate needs an escalation path"),
    ]


def test_rollout_and_quota_are_checked():
    found = errors('  rollout {\n    target "a" canary\n    otherwise shadw\n'
                   '    auto_rollback { treshold_pct 5 }\n  }\n'
                   '  quota users { requests 5 per hour requests 6 per hour tokens 1 per fortnight }')
    assert [(line, col, msg, hint) for line, col, _, msg, hint in found] == [
        (3, 16, "canary needs a percentage between 0 and 100", "e.g. `canary 10%`"),
        (4, 15, "unknown rollout stage `shadw`", "did you mean `shadow`?"),
        (5, 21, "unknown auto_rollback setting `treshold_pct`", "did you mean `threshold_pct`?"),
        (7, 9, "unknown quota subject `users`", "did you mean `user`?"),
        (7, 37, "two `requests` limits per hour", "first given at line 7; keep one"),
        (7, 70, "unknown quota window `fortnight`", "expected one of `daily`, `day`, `hour`, "
         "`minute`, `month`, `monthly`, `week`, `weekly`"),
    ]


def test_quota_blocks_accept_the_tool_calls_unit():
    source = ('policy v1 "q" {\n  quota user { tool_calls 100 per hour tokens 5 per day }\n'
              '  quota project { tool_calls 1000 per day }\n}\n')
    assert dsl.check(source, "q.pol") == []
    quotas = dsl.compile_policy(source, "q.pol").quotas
    assert [(q.unit, q.window, q.limit) for q in quotas.user] == [
        ("tool_calls", "hour", 100), ("tokens", "daily", 5)]
    assert [(q.unit, q.window, q.limit) for q in quotas.project] == [("tool_calls", "daily", 1000)]


def test_rendering_has_source_line_caret_and_help():
    source = 'policy v1 "t" {\n  default alow\n}\n'
    (diagnostic,) = dsl.check(source, "t.pol")
    assert diagnostic.render(source) == (
        "t.pol:2:11: error: unknown decision `alow`\n"
        "      default alow\n"
        "              ^\n"
        "  help: did you mean `allow`?")


def test_compile_policy_raises_policy_error_carrying_every_diagnostic():
    with pytest.raises(dsl.PolicyError) as caught:
        dsl.compile_policy('policy v2 "Bad Id" {\n  default alow\n}\n', "x.pol")
    assert [(d.file, d.line, d.column, d.severity) for d in caught.value.diagnostics] == [
        ("x.pol", 1, 8, "error"), ("x.pol", 1, 11, "error"), ("x.pol", 2, 11, "error")]
    assert caught.value.diagnostics[0].hint == "this checker understands `v1`"


def test_issue_examples_read_well():
    source = ('policy v1 "t" {\n  defualt allow\n  list words = ["x"]\n'
              '  rule r { when input contains any of wrods then refuse }\n'
              '  rollout {\n    target "m" canary 25\n  }\n'
              '  rule t { when model > 5 then refuse }\n  rule u { when stream then refuse }\n}\n')
    found = [(d.line, d.column, d.code, d.message, d.hint) for d in dsl.check(source, "t.pol")]
    assert found == [
        (2, 3, "unknown-keyword", "unknown keyword `defualt`", "did you mean `default`?"),
        (4, 39, "unknown-list", "unknown list `wrods`", "did you mean `words`?"),
        (6, 25, "missing-token", "missing `%` after `25`",
         "add it at the end of this line"),
        (8, 17, "ordering-needs-number", "`>` needs a number; `model` is a string",
         "use `==` or `!=`"),
    ]


def test_no_diagnostic_shows_parser_internals():
    from pathlib import Path

    bad = Path(__file__).resolve().parent / "bad"
    texts = [p.read_text() for p in bad.glob("*.expected")]
    assert len(texts) >= 15
    assert [t for t in texts if "$end" in t.lower() or ", ...\n" in t] == []
