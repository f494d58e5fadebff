"""Inline policies under their budget (gateway/policy/inline.py): the content-hash cache, caps
checked before parsing, a compile off the event loop within its time budget, and escalation
targets an inline policy may not choose."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
import trio

from gateway.errors import InvalidPolicy
from gateway.policy.escalation import EscalationSettings
from gateway.policy.inline import InlineBudget, InlinePolicies

INLINE = """policy v1 "inline" {
  default allow
  denylist fruit = ["banana"]
  rule fruit { when input contains any of fruit then refuse reason FRUIT }
}"""


async def test_an_inline_policy_is_compiled_once_per_content() -> None:
    cache = InlinePolicies(capacity=2)
    first = await cache.compile(INLINE)
    assert await cache.compile(INLINE) is first
    doc = {"name": "d", "config": {"rules": {"denylist": ["kiwi"]}}}
    assert await cache.compile(doc) is await cache.compile(dict(reversed(list(doc.items()))))


async def test_the_inline_cache_is_bounded() -> None:
    cache = InlinePolicies(capacity=2)
    first = await cache.compile(INLINE)
    await cache.compile(INLINE.replace("banana", "kiwi"))
    await cache.compile(INLINE.replace("banana", "plum"))
    assert await cache.compile(INLINE) is not first


@pytest.mark.parametrize("source", [5, None, ["policy"], True])
async def test_an_inline_policy_of_the_wrong_type_is_invalid_policy(source: Any) -> None:
    with pytest.raises(InvalidPolicy) as caught:
        await InlinePolicies().compile(source)
    assert caught.value.param == "policy"


@pytest.mark.parametrize("source", [
    orjson.loads(b'{"a":' * 300 + b"1" + b"}" * 300),
    orjson.loads(b'{"name": "x", "config": ' + b"[" * 900 + b"]" * 900 + b"}"),
    "\ud800",
])
async def test_an_inline_policy_too_deep_to_encode_or_with_a_lone_surrogate_is_invalid_policy(
        source: Any) -> None:
    with pytest.raises(InvalidPolicy):
        await InlinePolicies().compile(source)


async def test_an_inline_policy_that_fails_its_check_reports_the_diagnostics() -> None:
    with pytest.raises(InvalidPolicy) as caught:
        await InlinePolicies().compile(INLINE.replace("default allow", "default allw"))
    assert "unknown decision `allw`" in caught.value.message
    assert "did you mean `allow`?" in caught.value.message
    assert "<inline policy>:2:" in caught.value.message


def _many_rules(count: int) -> str:
    rules = "\n".join(f'  rule r{i} {{ when input contains "w{i}" then refuse reason R }}'
                      for i in range(count))
    return f'policy v1 "big" {{\n  default allow\n{rules}\n}}'


@pytest.mark.parametrize(("source", "budget", "said"), [
    ("x" * 70_000, InlineBudget(), "bytes; the limit is 65536"),
    ("\n" * 3_000, InlineBudget(), "more than 2000 lines"),
    (_many_rules(12), InlineBudget(max_rules=10), "12 rules; the limit is 10"),
    ({"name": "d", "config": {"rules": {"denylist": [f"t{i}" for i in range(50)]}}},
     InlineBudget(max_terms=40), "50 list terms; the limit is 40"),
    ('policy v1 "p" {\n  default allow\n  denylist d = [' + ", ".join(
        f'"t{i}"' for i in range(50)) + ']\n  rule r { when input contains any of d then '
     'refuse reason R }\n}', InlineBudget(max_terms=40), "50 list terms; the limit is 40"),
    ({"name": "d", "rules": {"response_pattern": [f"p{i}" for i in range(30)]}},
     InlineBudget(), "30 patterns; the limit is 20"),
])
async def test_an_inline_policy_over_its_caps_is_refused(source: Any, budget: InlineBudget,
                                                         said: str) -> None:
    with pytest.raises(InvalidPolicy) as caught:
        await InlinePolicies(budget).compile(source)
    assert said in caught.value.message
    assert caught.value.param == "policy"


async def test_a_compile_over_its_time_budget_is_refused_and_the_loop_keeps_running() -> None:
    # A budget of 0.5 s (a parse of 8,000 rules takes about three times that): the window in
    # which the loop must tick is long enough that a loaded machine still gives it a few turns
    # (in 0.2 s it once got only two).
    cache = InlinePolicies(InlineBudget(max_bytes=10_000_000, max_lines=1_000_000,
                                        max_rules=1_000_000, compile_seconds=0.5))
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.01)
            ticks += 1

    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        with pytest.raises(InvalidPolicy) as caught:
            await cache.compile(_many_rules(8_000))
        nursery.cancel_scope.cancel()
    assert "did not compile within 0.5 s" in caught.value.message
    assert time.monotonic() - started < 0.5 + 0.8  # the budget, not the whole parse
    # The event loop ran while the compile did: a compile on the loop itself would leave no tick
    # before the refusal. Not more than 3 is required: on a loaded 2-core machine the compile
    # thread and other processes take most of the budget, whatever the loop would do.
    assert ticks >= 3


async def test_inline_policies_can_be_refused_on_v1() -> None:
    cache = InlinePolicies(InlineBudget(on_v1=False))
    with pytest.raises(InvalidPolicy, match="does not take inline policies on /v1"):
        await cache.compile(INLINE, surface="v1")
    assert (await cache.compile(INLINE)).policy_id == "inline"


@pytest.mark.parametrize("path", ["http://127.0.0.1:9/internal", "https://hooks.example.com/x"])
async def test_an_inline_policy_may_not_name_an_escalation_url(path: str) -> None:
    settings = EscalationSettings.from_mapping({"allowed_urls": ["https://hooks.example.com/x"],
                                                "targets": {"oncall": {
                                                    "url": "https://hooks.example.com/o"}}}, {})
    source = INLINE.replace("default allow", f'default allow\n  escalation_path "{path}"')
    with pytest.raises(InvalidPolicy, match="may not name an escalation URL"):
        await InlinePolicies(escalation=settings).compile(source)
    named = INLINE.replace("default allow", 'default allow\n  escalation_path "oncall"')
    assert (await InlinePolicies(escalation=settings).compile(named)).escalation_path == "oncall"
