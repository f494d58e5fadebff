"""Policy evaluation benchmark.

    .venv/bin/python bench/bench_policy.py [--json out.json] [--quick]

Measures, on a generated policy of 100 rules with a 10,000-term denylist (categories and PII on):
the median time of one full input decision on a 4 KB prompt (classification + rules, and rules
alone), the compile time, the decision time against text size (1..64 KB) and against list size
(100..100,000 terms).  Ratios are computed from figures measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dsl

WORDS = ("the customer asked about the order status and the refund for the broken item "
         "please help me understand the invoice and the delivery date of my package "
         "contact me at jane.doe@example.com or call about the account settings ").split()


def prompt(size: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    out: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(WORDS)
        out.append(word)
        length += len(word) + 1
    return " ".join(out)[:size]


def disguised(text: str, seed: int = 3) -> str:
    """The prompt with every fifth word carrying a spelling trick (an accent, a zero-width space,
    a Cyrillic look-alike or full-width letters): the folding's slow path on every token."""
    rng = random.Random(seed)
    tricks = (lambda w: w[0] + "\u0301" + w[1:], lambda w: w[:1] + "\u200b" + w[1:],
              lambda w: w.replace("o", "\u043e"),
              lambda w: "".join(chr(ord(c) + 0xFEE0) if c.isalpha() else c for c in w))
    words = text.split(" ")
    for index in range(0, len(words), 5):
        words[index] = rng.choice(tricks)(words[index]) if words[index] else words[index]
    return " ".join(words)


def terms(count: int, seed: int = 2) -> list[str]:
    rng = random.Random(seed)
    found: set[str] = set()
    while len(found) < count:
        size = rng.randint(5, 12)
        word = "".join(rng.choice(string.ascii_lowercase) for _ in range(size))
        found.add(word if rng.random() < 0.8 else f"{word} {rng.choice(WORDS)}")
    return sorted(found)


def policy_source(list_size: int, rules: int = 100) -> str:
    listed = ",\n    ".join(json.dumps(t) for t in terms(list_size))
    lines = ['policy v1 "bench" {', "  default allow", '  escalation_path "ops@example.com"',
             f"  denylist blocked = [\n    {listed}\n  ]", '  list watch = ["zzqx", "qqzx words"]',
             "  rule r0 { when input contains any of blocked then refuse reason BLOCKED }"]
    categories = ["hate", "violence", "harassment", "illicit", "sexual"]
    for index in range(1, rules):
        kind = index % 6
        if kind == 0:
            condition = f'input contains "literal-{index}-zz"'
        elif kind == 1:
            condition = f"input matches /tok{index}[0-9]{{4}}x/"
        elif kind == 2:
            condition = f'model == "model-{index}" and message_count > {index}'
        elif kind == 3:
            condition = f'category "{categories[index % 5]}" >= 0.{5 + index % 4}'
        elif kind == 4:
            condition = "pii credit_card or pii ssn"
        else:
            condition = f'last_user contains any of watch and target in ["t{index}", "u{index}"]'
        action = ("refuse", "rewrite", "summary", "escalate")[index % 4]
        extra = ' instruction "be careful"' if action in ("rewrite", "summary") else ""
        lines.append(f"  rule r{index} {{ when {condition} then {action}{extra} }}")
    return "\n".join(lines) + "\n}\n"


def median_us(run: Callable[[], object], repeat: int) -> float:
    for _ in range(min(20, repeat)):
        run()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        run()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def facts_for(text: str) -> dsl.RequestFacts:
    return dsl.RequestFacts(surface="chat.completions", model="gpt-4o-mini", target="bench",
                            message_count=2, estimated_input_tokens=len(text) // 4,
                            max_output_tokens=256, input_text=text, last_user_text=text)


def _bind(policy: dsl.CompiledPolicy, facts: dsl.RequestFacts,
          classification: dsl.Classification) -> Callable[[], object]:
    return lambda: policy.evaluate_input(facts, classification)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    repeat = 50 if args.quick else 300
    results: dict[str, Any] = {}

    source = policy_source(10_000)
    start = time.perf_counter()
    compiled = dsl.compile_policy(source)
    results["compile_s"] = time.perf_counter() - start
    text = prompt(4096)
    facts = facts_for(text)
    classification = dsl.classify(text)
    results["rules_only_4kb_us"] = median_us(lambda: compiled.evaluate_input(
        facts, classification), repeat)
    results["classify_4kb_us"] = median_us(lambda: dsl.classify(text), repeat)
    results["full_4kb_us"] = median_us(lambda: compiled.evaluate_input(
        facts, dsl.classify(text)), repeat)

    tricky = disguised(text)
    tricky_facts = facts_for(tricky)
    results["full_4kb_disguised_us"] = median_us(lambda: compiled.evaluate_input(
        tricky_facts, dsl.classify(tricky)), repeat)

    by_size: dict[int, float] = {}
    for kb in (1, 4, 16, 64):
        sized = prompt(kb * 1024, seed=kb)
        sized_facts, sized_class = facts_for(sized), dsl.classify(sized)
        by_size[kb] = median_us(_bind(compiled, sized_facts, sized_class), max(20, repeat // kb))
    results["rules_us_by_text_kb"] = by_size
    results["text_64kb_over_1kb"] = by_size[64] / by_size[1]

    by_list: dict[int, float] = {}
    for count in (100, 1_000, 10_000, 100_000):
        listed = dsl.compile_policy(policy_source(count))
        by_list[count] = median_us(_bind(listed, facts, classification), repeat)
    results["rules_us_by_list_size"] = by_list
    results["list_100k_over_100"] = by_list[100_000] / by_list[100]
    start = time.perf_counter()
    dsl.compile_policy(policy_source(100_000))
    results["compile_100k_terms_s"] = time.perf_counter() - start

    print("Policy evaluation (100 rules, categories and PII on)")
    print(f"  compile, 10k-term list          {results['compile_s'] * 1000:9.1f} ms")
    print(f"  compile, 100k-term list         {results['compile_100k_terms_s'] * 1000:9.1f} ms")
    print(f"  rules only, 4 KB prompt         {results['rules_only_4kb_us']:9.1f} us (median)")
    print(f"  classify, 4 KB prompt           {results['classify_4kb_us']:9.1f} us (median)")
    print(f"  classify + rules, 4 KB prompt   {results['full_4kb_us']:9.1f} us (median)")
    print(f"  classify + rules, 4 KB, tricks  {results['full_4kb_disguised_us']:9.1f} us (median; "
          "every fifth word disguised)")
    print("  rules only vs text size:        " + "  ".join(
        f"{kb} KB {us:.0f} us" for kb, us in by_size.items()))
    print(f"    64 KB / 1 KB = {results['text_64kb_over_1kb']:.1f}x (linear would be 64x)")
    print("  rules only vs list size:        " + "  ".join(
        f"{n:,} {us:.0f} us" for n, us in by_list.items()))
    print(f"    100k / 100 terms = {results['list_100k_over_100']:.2f}x (target <= 1.5x)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
