"""Quota benchmark.

    .venv/bin/python bench/bench_quota.py [--json out.json] [--quick] [--no-http]

Both stores in one run, the SQLite file and a local redis-server (append-only file, fsync every
second, as docs/scale-out.md recommends), with a project and a user limit of each unit (4
counters per request): admission + settlement per request alone, under 32 concurrent trio tasks
in one process, and under 32 tasks in each of 3 processes on the same file or Redis; then the
latency of `/policy/chat/completions` through a 2-worker gateway on each store, quotas on
against quotas off (alternating requests, same run).
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
from gateway.quota.redis import RedisQuotaStore  # noqa: E402
from gateway.quota.sqlite import SqliteQuotaStore  # noqa: E402
from gateway.redis_link import RedisLink, RedisSettings  # noqa: E402

PROCESSES = 3

BIG = 10**12
LIMITS = dict(project_limits=(QuotaLimit("requests", "daily", BIG),
                              QuotaLimit("tokens", "daily", BIG)),
              user_limits=(QuotaLimit("requests", "hour", BIG),
                           QuotaLimit("tokens", "monthly", BIG)))


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_us": round(statistics.median(ordered) * 1e6, 1),
            "p99_us": round(ordered[int(len(ordered) * 0.99) - 1] * 1e6, 1)}


async def _cycles(store: Any, tasks: int, per_task: int) -> tuple[list[float], float]:
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
    elapsed = time.perf_counter() - started
    if isinstance(store, RedisQuotaStore):
        await store.link.aclose()
    return samples, elapsed


def _run_store(where: str, tasks: int, per_task: int) -> tuple[list[float], float]:
    """`where`: a SQLite path, or `redis:<port>` for the local redis-server."""
    if where.startswith("redis:"):
        link = RedisLink(RedisSettings(host="127.0.0.1", port=int(where.split(":")[1])))
        return trio.run(_cycles, RedisQuotaStore(link), tasks, per_task)
    store = SqliteQuotaStore(where)
    try:
        return trio.run(_cycles, store, tasks, per_task)
    finally:
        store.close()


def _process_main(path: str, tasks: int, per_task: int, out: Any) -> None:
    out.put(_run_store(path, tasks, per_task))


def store_figures(path: str, quick: bool) -> dict[str, Any]:
    alone_n, per_task = (300, 20) if quick else (2000, 60)
    _run_store(path, 1, 50)  # warm up: schema, WAL file, thread cache, script cache
    samples, _ = _run_store(path, 1, alone_n)
    results: dict[str, Any] = {"alone": percentiles(samples)}
    samples, elapsed = _run_store(path, 32, per_task)
    results["32_tasks_1_process"] = {**percentiles(samples),
                                     "per_second": round(len(samples) / elapsed)}
    queue: Any = multiprocessing.get_context("spawn").Queue()
    procs = [multiprocessing.get_context("spawn").Process(
        target=_process_main, args=(path, 32, per_task, queue)) for _ in range(PROCESSES)]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    parts = [queue.get() for _ in procs]
    for proc in procs:
        proc.join()
    elapsed = time.perf_counter() - started
    combined = [s for part, _ in parts for s in part]
    results[f"32_tasks_x_{PROCESSES}_processes"] = {**percentiles(combined),
                                         "per_second": round(len(combined) / elapsed)}
    return results


def http_figures(directory: Path, quick: bool, redis_url: str) -> dict[str, Any]:
    import httpx2
    from mock_upstream import MockUpstream
    from quota_e2e.conftest import start_workers, stop_workers

    rounds = 200 if quick else 1000
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}],
            "max_tokens": 20}
    redis_config = f'store = "redis"\n\n[redis]\nurl = "{redis_url}"\n'
    with MockUpstream() as upstream:
        gateways = {"sqlite": start_workers(directory / "http-sqlite", upstream.url),
                    "redis": start_workers(directory / "http-redis", upstream.url,
                                           extra_config=redis_config)}
        try:
            keys = {}
            for store, workers in gateways.items():
                _, keys[(store, "on")] = workers.project(
                    budget={"requests": {"daily": BIG}, "tokens": {"daily": BIG}},
                    user_quota={"requests": {"hour": BIG}})
                _, keys[(store, "off")] = workers.project()
            times: dict[tuple[str, str], list[float]] = {name: [] for name in keys}
            clients = {store: httpx2.Client(base_url=w.url, timeout=30)
                       for store, w in gateways.items()}
            for index in range(rounds + 50):
                for (store, mode), key in keys.items():
                    started = time.perf_counter()
                    response = clients[store].post("/policy/chat/completions", json=body,
                                                   headers={"authorization": f"Bearer {key}"})
                    elapsed = time.perf_counter() - started
                    assert response.status_code == 200, response.text
                    if index >= 50:  # warm-up
                        times[(store, mode)].append(elapsed)
            for client in clients.values():
                client.close()
        finally:
            for workers in gateways.values():
                stop_workers(workers)
    out: dict[str, Any] = {"requests_each": rounds}
    for store in gateways:
        on, off = times[(store, "on")], times[(store, "off")]
        # Each "on" request ran right before its "off" twin: the median of the pairwise
        # differences cancels the machine's slow drifts better than the difference of medians.
        paired = statistics.median(a - b for a, b in zip(on, off, strict=True))
        out[store] = {"quotas_on": percentiles(on), "quotas_off": percentiles(off),
                      "added_p50_us": round((statistics.median(on) - statistics.median(off))
                                            * 1e6, 1),
                      "added_paired_median_us": round(paired * 1e6, 1)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-http", action="store_true", help="skip the gateway measurement")
    args = parser.parse_args()
    from redis_server import RedisServer

    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp) / "redis", appendonly=True, fsync="everysec").start()
        try:
            results: dict[str, Any] = {"store": {
                "sqlite": store_figures(str(Path(tmp) / "store.db"), args.quick),
                "redis": store_figures(f"redis:{redis.port}", args.quick)}}
            sqlite_rate = results["store"]["sqlite"][f"32_tasks_x_{PROCESSES}_processes"]
            redis_rate = results["store"]["redis"][f"32_tasks_x_{PROCESSES}_processes"]
            results["store"]["redis_vs_sqlite_admissions_per_second"] = round(
                redis_rate["per_second"] / sqlite_rate["per_second"], 2)
            print(json.dumps(results["store"], indent=2), flush=True)
            if not args.no_http:
                results["http"] = http_figures(Path(tmp), args.quick, redis.url)
                print(json.dumps(results["http"], indent=2))
        finally:
            redis.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
