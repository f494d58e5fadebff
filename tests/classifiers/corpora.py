"""Loading of the classifier corpora kept in tests/data/classifiers (JSONL, one case a line)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "data" / "classifiers"
# Recall floor per category on the labelled positives; individual misses are allowed.
RECALL_FLOOR = 0.8


def _lines(name: str) -> list[dict[str, Any]]:
    with (DATA / name).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def benign() -> list[dict[str, Any]]:
    return _lines("benign.jsonl")


def category_positives() -> list[dict[str, Any]]:
    return _lines("category_positives.jsonl")


@dataclass(frozen=True)
class PiiCase:
    kind: str
    text: str
    values: tuple[str, ...]  # expected finding values, in order (positives only)
    why: str = ""


def pii_positives() -> list[PiiCase]:
    # Secrets are stored in pieces so that repository secret scanners leave the fixtures alone.
    cases = []
    for row in _lines("pii_positives.jsonl"):
        text = "".join(row["text_parts"]) if "text_parts" in row else row["text"]
        if "values_parts" in row:
            values = tuple("".join(parts) for parts in row["values_parts"])
        else:
            values = tuple(row["values"])
        cases.append(PiiCase(row["kind"], text, values))
    return cases


def pii_negatives() -> list[PiiCase]:
    return [
        PiiCase(row["kind"], row["text"], (), row["why"]) for row in _lines("pii_negatives.jsonl")
    ]
