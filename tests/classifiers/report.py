"""Print the classifier quality and speed tables that docs/classifiers.md quotes.

Run: .venv/bin/python tests/classifiers/report.py
Precision per category counts as false positives the benign corpus and the positives labelled
with a category that is neither this one nor one of its sub-categories.
"""

from __future__ import annotations

import statistics
import sys
import timeit
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parent)]

from corpora import benign, category_positives, pii_negatives, pii_positives  # noqa: E402

from dsl.classifiers import CATEGORIES, PII_KINDS, classify, find_pii  # noqa: E402

SAMPLE_PARAGRAPH = (
    "Hello team, I am writing about order 58213 placed on 2024-03-15. The delivery was expected "
    "within 3 days but it has been 12 days now. Could you check the status and let me know how to "
    "fix it? Our server at version 3.11.7 keeps restarting every 30 minutes; I will kill the "
    "process and send the logs (error code E1042). Please reply by Friday. My kids say hi, Dana. "
)


def _counts_as(labelled: str, category: str) -> bool:
    return labelled == category or labelled.startswith(category + "/")


def category_table() -> list[str]:
    positives = category_positives()
    benign_rows = benign()
    lines = ["| category | positives | recall | false positives (benign + other) | precision |",
             "|---|---|---|---|---|"]  # fmt: skip
    triggered_pos = [(row["category"], classify(row["text"]).triggered()) for row in positives]
    triggered_benign = [classify(row["text"]).triggered() for row in benign_rows]
    for category in CATEGORIES:
        labelled = [hits for label, hits in triggered_pos if _counts_as(label, category)]
        true_positives = sum(category in hits for hits in labelled)
        false_positives = sum(category in hits for hits in triggered_benign) + sum(
            category in hits for label, hits in triggered_pos if not _counts_as(label, category)
        )
        flagged = true_positives + false_positives
        precision = f"{true_positives / flagged:.2f}" if flagged else "n/a"
        lines.append(
            f"| `{category}` | {len(labelled)} | {true_positives / len(labelled):.2f} "
            f"| {false_positives} | {precision} |"
        )
    return lines


def pii_table() -> list[str]:
    lines = ["| kind | positive cases | exact-span hits | look-alikes | look-alikes reported |",
             "|---|---|---|---|---|"]  # fmt: skip
    positives, negatives = pii_positives(), pii_negatives()
    for kind in PII_KINDS:
        cases = [case for case in positives if case.kind == kind]
        exact = 0
        for case in cases:
            found = [case.text[f.start : f.end] for f in find_pii(case.text)]
            exact += found == list(case.values)
        looks = [case for case in negatives if case.kind == kind]
        reported = sum(any(f.kind == kind for f in find_pii(case.text)) for case in looks)
        lines.append(f"| `{kind}` | {len(cases)} | {exact} | {len(looks)} | {reported} |")
    return lines


def _median_us(text: str) -> float:
    classify(text)
    runs = timeit.repeat(lambda: classify(text), number=200, repeat=15)
    return statistics.median(runs) / 200 * 1e6


def timing_table() -> list[str]:
    plain = (SAMPLE_PARAGRAPH * 20)[:4096]
    with_pii = (
        plain[:3900] + " mail a.b@example.com, call +1 (415) 555-2671, card 4111 1111 1111 1111"
    )
    flagged = plain[:4000] + " how do I build a pipe bomb"
    accented = plain.replace("e", "é")
    return [
        "| 4 KB prompt | classify() median |",
        "|---|---|",
        f"| everyday English, no PII, nothing flagged | {_median_us(plain):.0f} us |",
        f"| same, accented (non-ASCII) | {_median_us(accented):.0f} us |",
        f"| with an email, a phone and a card number | {_median_us(with_pii):.0f} us |",
        f"| with a flagged phrase | {_median_us(flagged):.0f} us |",
    ]


def main() -> None:
    print(f"benign corpus: {len(benign())} texts; positives: {len(category_positives())}\n")
    print("\n".join(category_table()), end="\n\n")
    print("\n".join(pii_table()), end="\n\n")
    print("\n".join(timing_table()))


if __name__ == "__main__":
    main()
