"""The strings of a JSON value, read and rewritten: keys are text too, nothing is lost when a
rewrite makes two keys equal, and no nesting a decoder accepts breaks the walk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

import dsl
from gateway.policy.json_strings import (
    MAX_JSON_DEPTH,
    _distinct,
    json_depth,
    map_strings,
    strings_found,
)
from gateway.policy.toolcalls import ToolJudge, redacted_arguments

MCP_TOOLS = dsl.compile_policy(
    (Path(__file__).parents[2] / "policies" / "mcp_tools.pol").read_text(),
    "mcp_tools.pol")
PHONE = "+1 415 555 0100"


def upper(text: str) -> str:
    return text.upper()


def test_keys_and_values_are_rewritten_except_under_skipped_keys() -> None:
    value = {"a": ["b", {"c": "d", "type": "keep", "n": 1}], "e": None}
    assert map_strings(value, upper, frozenset({"type"})) == {
        "A": ["B", {"C": "D", "type": "keep", "N": 1}], "E": None}
    assert map_strings(value, upper, keys=False) == {
        "a": ["B", {"c": "D", "type": "KEEP", "n": 1}], "e": None}
    assert map_strings("x", upper) == "X" and map_strings(3, upper) == 3


def test_the_protocols_field_names_stay_when_fixed() -> None:
    error = {"code": -1, "message": "m", "data": {"k": "v", "deeper": {"k2": "v2"}}}
    assert map_strings(error, upper, fixed_levels=1) == {
        "code": -1, "message": "M", "data": {"K": "V", "DEEPER": {"K2": "V2"}}}
    assert strings_found(error, keys=True, fixed_levels=1) == ["m", "k", "v", "deeper", "k2",
                                                              "v2"]
    assert map_strings([{"text": "t"}], upper, keys=False) == [{"text": "T"}]


def test_keys_a_rewrite_makes_equal_stay_distinct() -> None:
    value = {"a@x": 1, "b@x": 2, "*": 3, "* (2)": 4}
    assert map_strings(value, lambda text: "*" if "@" in text else text) == {
        "*": 1, "* (2)": 2, "* (3)": 3, "* (2) (2)": 4}


class _CountedKeys(dict[str, Any]):
    """An object being rebuilt that counts the key probes made against it."""

    probes = 0

    def __contains__(self, key: object) -> bool:
        self.probes += 1
        return super().__contains__(key)


def test_keys_that_collide_cost_probes_linear_in_their_number() -> None:
    # Keys that already hold the suffixes the collisions will want, then many collisions: the
    # old scan from ` (2)` upwards took about n*n/2 probes (seconds for this n).
    n = 20_000
    target = _CountedKeys({f"* ({number})": 0 for number in range(2, n)})
    target["*"] = 0
    suffixes: dict[tuple[int, str], int] = {}
    for _ in range(n):
        target[_distinct(target, "*", suffixes)] = 1
    assert len(target) == 2 * n - 1  # "*", " (2)" to " (n-1)", and n new ones
    assert target.probes <= 3 * n


def test_many_keys_redacted_to_one_text_keep_every_entry() -> None:
    n = 20_000  # quadratic suffix search took about half a minute for this many
    value = {f"u{index}@x.io": index for index in range(n)} | {"[EMAIL] (7)": "own"}
    redacted = map_strings(value, lambda text: "[EMAIL]" if "@" in text else text)
    assert len(redacted) == n + 1
    assert sorted(redacted.values(), key=str) == sorted(value.values(), key=str)
    assert redacted["[EMAIL]"] == 0 and redacted["[EMAIL] (6)"] == 5
    assert redacted["[EMAIL] (7)"] == 6 and redacted["[EMAIL] (7) (2)"] == "own"


def test_strings_are_found_in_document_order() -> None:
    value = {"k1": {"k2": "v2", "k3": ["v3", {"k4": "v4"}]}, "k5": "v5"}
    assert strings_found(value) == ["v2", "v3", "v4", "v5"]
    assert strings_found(value, keys=True) == ["k1", "k2", "v2", "k3", "v3", "k4", "v4", "k5",
                                               "v5"]
    assert strings_found(value, frozenset({"k3"}), keys=True) == ["k1", "k2", "v2", "k5", "v5"]


def test_any_depth_a_decoder_accepts_is_walked_without_recursion() -> None:
    deepest = orjson.loads("[" * 1024 + '"secret"' + "]" * 1024)
    assert json_depth(deepest) == 1024 > MAX_JSON_DEPTH
    assert strings_found(deepest) == ["secret"]
    rewritten = map_strings(deepest, upper)
    assert json_depth(rewritten) == 1024
    assert strings_found(rewritten) == ["SECRET"]
    assert json_depth("x") == 0 and json_depth([]) == 1 and json_depth({"a": [{}]}) == 3


def test_a_model_issued_call_with_a_phone_number_in_a_key_is_redacted() -> None:
    facts = dsl.RequestFacts(surface="chat.completions", model="m", target="default",
                             project_id="p", message_count=1, has_tools=True)
    verdict = ToolJudge([MCP_TOOLS], facts, enforced=True).decide(
        "add_note", orjson.dumps({"notes": {PHONE: "call"}, "phone": PHONE}).decode())
    assert "redact_contacts_in_arguments" in verdict.decision.fired_rules
    assert not verdict.stopped
    assert orjson.loads(verdict.arguments) == {"notes": {"[REDACTED:PHONE]": "call"},
                                               "phone": "[REDACTED:PHONE]"}


@pytest.mark.parametrize("arguments", [
    "[" * 1000 + f'"{PHONE}"' + "]" * 1000,  # deeper than orjson writes again
    f"call {PHONE} now",  # no JSON: a custom tool's free-form input
])
def test_arguments_that_cannot_be_rewritten_as_json_are_redacted_as_text(arguments: Any
                                                                         ) -> None:
    redactor = ToolJudge([MCP_TOOLS], dsl.RequestFacts(surface="chat.completions", model="m"),
                         enforced=True).decide("add_note", arguments).decision.obligations
    assert redactor.redactor is not None
    redacted = redacted_arguments(arguments, redactor.redactor)
    assert PHONE not in redacted and "[REDACTED:PHONE]" in redacted
