"""Every diagnostic the checker can emit, by stable code.

A code names the kind of problem, not its wording: messages may improve, codes stay.  The
bad-policy corpus (tests/policy_dsl/bad/) has an entry for every code here, and the checker
refuses a code that is not listed.
"""

from __future__ import annotations

from types import MappingProxyType

CODES = MappingProxyType({
    # syntax (dsl/parser.py)
    "syntax-error": "a token the grammar does not allow here",
    "unknown-keyword": "a misspelled keyword, with the closest one",
    "missing-token": "a statement ends before a required token, e.g. `%` after a canary share",
    "unexpected-character": "a character that starts no token",
    "unexpected-eof": "the file ends inside a block",
    "missing-header": "no `policy v1 \"id\" {` header",
    "invalid-escape": "a string with an escape JSON does not know",
    "nested-too-deeply": "conditions nested deeper than the parser can follow",
    # JSON documents (dsl/json_policy.py, dsl/api.py)
    "policy-input-type": "a policy given as neither text nor a JSON object",
    "invalid-json": "the file is not valid JSON",
    "json-not-an-object": "a JSON document that is not an object",
    "json-not-a-policy": "a JSON object that is no policy document (e.g. a request file)",
    "json-unknown-key": "a key neither document shape knows",
    "json-wrong-type": "a value of the wrong JSON type",
    "json-bad-choice": "a value outside its allowed set",
    "json-bad-percentage": "a deployment percentage outside 0..100",
    "json-unknown-quota": "a legacy quota key that is not `UNIT_per_WINDOW` (requests, tokens, tool_calls)",
    # header and settings
    "unsupported-version": "a language version other than v1",
    "invalid-policy-id": "a policy id that is not a slug",
    "setting-twice": "a setting given twice",
    "invalid-escalation-path": "an escalation path that is no URL or address",
    "empty-setting": "a text setting with nothing between the quotes",
    "unknown-decision": "a decision name that does not exist",
    "reason-code-case": "a reason code not in UPPER_SNAKE_CASE",
    # term lists
    "duplicate-list": "two lists with one name",
    "second-allowlist": "more than one allowlist",
    "too-many-terms": "a list over the term limit",
    "empty-list": "a list without terms",
    "empty-term": "a term that is empty after normalisation",
    "term-too-long": "a term over the length limit",
    "repeated-term": "a term that repeats another after normalisation",
    "unused-list": "a list no rule tests or redacts",
    # rules
    "too-many-rules": "a policy over the rule limit",
    "duplicate-rule": "two rules with one name",
    "rule-without-when": "a rule without a condition",
    "rule-two-whens": "a rule with two `when`",
    "rule-without-action": "a rule with neither `then` nor `redact`",
    "rule-two-thens": "a rule with two `then`",
    "message-not-allowed": "`message` on a decision that shows none",
    "instruction-not-allowed": "`instruction` on a decision that adds none",
    "decided-after-stream": "a refusing rule a streamed answer can only decide once it was sent",
    "rule-without-effect": "an allow rule that changes nothing",
    "escalate-without-path": "escalate in a policy without an escalation path",
    "redact-matched-without-list": "`redact matched terms` in a rule that tests no list",
    "never-fires": "a condition that can never be true",
    "negated-tool-test": "a `not` over a tool test, true on every request that is no tool call",
    # conditions
    "unknown-text": "a text name that does not exist",
    "field-is-not-a-text": "a request field used where a text is needed",
    "text-is-not-a-field": "a text used where a request field is needed",
    "unknown-field": "a request field that does not exist",
    "field-type": "a test that does not fit the field's type",
    "type-mismatch": "a field compared with a value of another type",
    "ordering-needs-number": "`<`, `>` ... on a field that is not a number",
    "text-as-flag": "a text used alone as if it were true or false",
    "text-takes-regex": "a text matched against a \"glob\"",
    "field-takes-glob": "a string field matched against a /regex/",
    "unknown-list": "a list name that is not declared",
    "empty-list-tested": "a test of a list without terms",
    "not-a-tools-list": "`field in NAME` with a list that is no `tools` list, or a field no tool's",
    "tools-list-in-text": "a `tools` list (names, with globs) tested against a text",
    "empty-contains": "`contains \"\"`",
    "unknown-category": "a category that does not exist",
    "score-out-of-range": "a category threshold outside 0..1",
    "unknown-pii-kind": "a PII kind that does not exist",
    "unknown-regex-flag": "a regex flag other than i, m, s",
    "pattern-too-long": "a pattern over the length limit",
    "non-linear-regex": "a pattern RE2 cannot run in linear time",
    "unbounded-output-pattern": "an output pattern a stream window cannot bound",
    # rollout and quotas
    "duplicate-rollout": "two rollout blocks",
    "stage-twice": "two stages for one target",
    "unknown-stage": "a rollout stage that does not exist",
    "canary-percentage": "a canary without a share in 0..100",
    "percentage-not-allowed": "a share on a stage other than canary",
    "rollback-setting-twice": "an auto_rollback setting given twice",
    "rollback-enabled-not-bool": "`enabled` that is not true or false",
    "unknown-rollback-setting": "an auto_rollback setting that does not exist",
    "rollback-threshold-range": "threshold_pct outside 0..100",
    "rollback-not-whole": "a count or duration that is not a whole number >= 1",
    "duplicate-quota": "two quota blocks for one subject",
    "unknown-quota-subject": "a quota subject other than project or user",
    "unknown-quota-unit": "a quota unit other than requests, tokens or tool_calls",
    "unknown-quota-window": "a quota window that does not exist",
    "quota-not-whole": "a quota limit that is not a whole number",
    "quota-limit-twice": "two limits for one unit and window",
})

#: Codes no policy file can produce (only a caller passing the wrong Python type).
NOT_FROM_FILES = frozenset({"policy-input-type"})
