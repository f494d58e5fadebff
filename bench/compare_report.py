"""The table of `bench compare`: medians over the rounds, and each gateway figure's ratio to the
relay of the same run."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

COLUMNS = {"relay": "relay", "v1": "`/v1`", "policy": "`/policy`",
           "policy_quota": "`/policy` + quota"}


def _title(target: str) -> str:
    name, _, tree = target.partition("@")
    return COLUMNS[name] + (" (baseline)" if tree else "")
Round = dict[str, dict[str, Any]]


def _median(rounds: list[Round], target: str, pick: Callable[[Round, str], float]) -> float:
    return statistics.median(pick(cells, target) for cells in rounds)


def _rps(measure: str) -> Callable[[Round, str], float]:
    return lambda cells, target: float(cells[target][measure]["rps"])


def _latency(measure: str, pct: str) -> Callable[[Round, str], float]:
    return lambda cells, target: float(cells[target][measure][f"p{pct}_ms"])


def _stream(field: str) -> Callable[[Round, str], float]:
    return lambda cells, target: float(cells[target]["streams"][field])


def _added(cells: Round, target: str) -> float:
    return float(cells[target]["first_token_ms"] - cells["direct"]["first_token_ms"])


ROWS: list[tuple[str, list[Callable[[Round, str], float]], str, bool]] = [
    # label, figures (joined by " / "), format, higher is better
    ("chat RPS c=1 / c=16", [_rps("chat_c1"), _rps("chat_c16")], "{:.0f}", True),
    ("chat_stream RPS c=1 / c=16", [_rps("chat_stream_c1"), _rps("chat_stream_c16")],
     "{:.0f}", True),
    ("chat p50 / p99 ms c=16", [_latency("chat_c16", "50"), _latency("chat_c16", "99")],
     "{:.1f}", False),
    ("chat_stream p50 / p99 ms c=16",
     [_latency("chat_stream_c16", "50"), _latency("chat_stream_c16", "99")], "{:.1f}", False),
    ("first token added, slow upstream (ms)", [_added], "{:+.1f}", False),
    ("256 slow streams: streams/s", [_stream("streams_per_s")], "{:.0f}", True),
    ("same: first-token p50 / p99 (ms)",
     [_stream("first_token_p50_ms"), _stream("first_token_p99_ms")], "{:.0f}", False),
    ("same: errors / listen overflows", [_stream("errors"), _stream("listen_overflows")],
     "{:.0f}", False),
]


def report(rounds: list[Round], targets: list[str], rss: dict[str, float],
           options: argparse.Namespace, path: Path) -> None:
    figures: dict[str, dict[str, list[float]]] = {}
    print("| measure | " + " | ".join(_title(t) for t in targets) + " |")
    print("|---|" + "---:|" * len(targets))
    for label, picks, fmt, _ in ROWS:
        cells = []
        figures[label] = {}
        for target in targets:
            values = [_median(rounds, target, pick) for pick in picks]
            figures[label][target] = values
            text = " / ".join(fmt.format(v) for v in values)
            relay = figures[label]["relay"]
            ratios = [v / r for v, r in zip(values, relay, strict=True) if r]
            if target != "relay" and ("RPS" in label or "streams/s" in label):
                text += " (" + " / ".join(f"{x:.2f}x" for x in ratios) + ")"
            cells.append(text)
        print(f"| {label} | " + " | ".join(cells) + " |")
    cells = [f"{rss['relay']:.0f}", f"{rss['gateway']:.0f} (one process serves the three)", "", ""]
    if "baseline" in rss:
        cells += [f"{rss['baseline']:.0f} (one process)", "", ""]
    print("| peak RSS (MB) | " + " | ".join(cells) + " |")
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"options": vars(options), "medians": figures, "rss_mb": rss,
                                "rounds": rounds}, indent=2, default=str))
