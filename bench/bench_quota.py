"""Quota benchmark.

    .venv/bin/python bench/bench_quota.py [--json out.json] [--quick]

Measures, on a SQLite file with a project and a user limit of each unit (4 counters per request):
admission + settlement per request alone, under 32 concurrent trio tasks in one process, and under
32 tasks in each of 2 processes on the same file; then the latency of `/policy/chat/completions`
through a 2-worker gateway with quotas on against quotas off (alternating requests, same run).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import trio  # noqa: E402

from dsl import QuotaLimit  # noqa: E402
from gateway.quota.limits import QuotaRequest  # noqa: E402
from gateway.quota.sqlite import SqliteQuotaStore  # noqa: E402

BIG = 10**12
LIMITS = dict(project_limits=(QuotaLimit("requests", "daily", BIG),
                              QuotaLimit("tokens", "daily", BIG)),
              user_limits=(QuotaLimit("requests", "hour", BIG),
                           QuotaLimit("tokens", "monthly", BIG)))


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_us": round(statistics.median(ordered) * 1e6, 1),
            "p99_us": round(ordered[int(len(ordered) * 0.99) - 1] * 1e6, 1)}


async def _cycles(store: SqliteQuotaStore, tasks: int, per_task: int) -> tuple[list[float], float]:
    samples: list[float] = []

    async def worker(index: int) -> None:
        for _ in range(per_task):
            started = time.perf_counter()
            reservation = await store.admit(QuotaRequest("proj_bench", f"user-{index}", 100,
                                                         **LIMITS))  # type: ignore[arg-type]
            await store.settle(reservation, 60, 30)
            samples.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for index in range(tasks):
            nursery.start_soon(worker, index)
    return samples, time.perf_counter() - started


def _run_store(path: str, tasks: int, per_task: int) -> tuple[list[float], float]:
    store = SqliteQuotaStore(path)
    try:
        return trio.run(_cycles, store, tasks, per_task)
    finally:
        store.close()


def _process_main(path: str, tasks: int, per_task: int, out: Any) -> None:
    out.put(_run_store(path, tasks, per_task))


def store_figures(directory: Path, quick: bool) -> dict[str, Any]:
    alone_n, per_task = (300, 20) if quick else (2000, 60)
    path = str(directory / "store.db")
    _run_store(path, 1, 50)  # warm up: schema, WAL file, thread cache
    samples, _ = _run_store(path, 1, alone_n)
    results: dict[str, Any] = {"alone": percentiles(samples)}
    samples, elapsed = _run_store(path, 32, per_task)
    results["32_tasks_1_process"] = {**percentiles(samples),
                                     "per_second": round(len(samples) / elapsed)}
    queue: Any = multiprocessing.get_context("spawn").Queue()
    procs = [multiprocessing.get_context("spawn").Process(
        target=_process_main, args=(path, 32, per_task, queue)) for _ in range(2)]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    parts = [queue.get() for _ in procs]
    for proc in procs:
        proc.join()
    elapsed = time.perf_counter() - started
    combined = [s for part, _ in parts for s in part]
    results["32_tasks_x_2_processes"] = {**percentiles(combined),
                                         "per_second": round(len(combined) / elapsed)}
    return results


def http_figures(directory: Path, quick: bool) -> dict[str, Any]:
    import httpx
    from mock_upstream import MockUpstream
    from quota_e2e.conftest import start_workers, stop_workers

    rounds = 200 if quick else 1000
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}],
            "max_tokens": 20}
    with MockUpstream() as upstream:
        workers = start_workers(directory / "http", upstream.url)
        try:
            _, key_on = workers.project(budget={"requests": {"daily": BIG},
                                                "tokens": {"daily": BIG}},
                                        user_quota={"requests": {"hour": BIG}})
            _, key_off = workers.project()
            times: dict[str, list[float]] = {"on": [], "off": []}
            with httpx.Client(base_url=workers.url, timeout=30) as client:
                for index in range(rounds + 50):
                    for name, key in (("on", key_on), ("off", key_off)):
                        started = time.perf_counter()
                        response = client.post("/policy/chat/completions", json=body,
                                               headers={"authorization": f"Bearer {key}"})
                        elapsed = time.perf_counter() - started
                        assert response.status_code == 200, response.text
                        if index >= 50:  # warm-up
                            times[name].append(elapsed)
        finally:
            stop_workers(workers)
    on, off = percentiles(times["on"]), percentiles(times["off"])
    # Each "on" request ran right before its "off" twin: the median of the pairwise differences
    # cancels the machine's slow drifts better than the difference of the two medians.
    paired = statistics.median(a - b for a, b in zip(times["on"], times["off"], strict=True))
    return {"quotas_on": on, "quotas_off": off,
            "added_p50_us": round(on["p50_us"] - off["p50_us"], 1),
            "added_paired_median_us": round(paired * 1e6, 1), "requests_each": rounds}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-http", action="store_true", help="skip the gateway measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[str, Any] = {"store": store_figures(Path(tmp), args.quick)}
        print(json.dumps(results["store"], indent=2), flush=True)
        if not args.no_http:
            results["http"] = http_figures(Path(tmp), args.quick)
            print(json.dumps(results["http"], indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
