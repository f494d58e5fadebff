"""Quota admission beside the event writer: do they queue behind each other's SQLite lock?

    ./dev bench locks [--quick]

16 trio tasks admit and settle quota reservations (4 counters each, as `/policy` with a budget
and a user quota does) while the event writer's connection inserts a batch of events every
50 ms in a thread (`EVENTS_PER_SECOND`, the event rate of a worker at that request rate). Three
layouts, in interleaved rounds:
- **same file**: quotas and events in one SQLite file, events with their history indexes;
- **same file, no history indexes**: the events table without its 9 filter indexes;
- **separate files**: events in one file, quotas in another.
Figures: admission + settlement p50/p99 (the time a request waits for its quota), and the
median time the writer holds the lock per batch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

from bench.bench_events import sample_event  # noqa: E402
from bench.bench_quota import LIMITS  # noqa: E402
from gateway.db import open_database  # noqa: E402
from gateway.events.store import EventStore  # noqa: E402
from gateway.quota.limits import QuotaRequest  # noqa: E402
from gateway.quota.sqlite import SqliteQuotaStore  # noqa: E402

EVENTS_PER_SECOND = 1000
BATCH_SECONDS = 0.05
TASKS = 16


def _drop_history_indexes(path: Path) -> None:
    db = open_database(path)
    names = [row[0] for row in db.conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'policy_events' "
        "AND sql IS NOT NULL")]
    for name in names:
        db.conn.execute(f"DROP INDEX {name}")
    db.conn.close()


def _event_writer(store: EventStore, stop: threading.Event, held: list[float]) -> None:
    batch = max(1, int(EVENTS_PER_SECOND * BATCH_SECONDS))
    index = 0
    while not stop.is_set():
        events = [sample_event(index + i) for i in range(batch)]
        index += batch
        started = time.perf_counter()
        store.write(events)
        held.append(time.perf_counter() - started)
        stop.wait(BATCH_SECONDS)


async def _admissions(store: SqliteQuotaStore, seconds: float) -> list[float]:
    samples: list[float] = []
    deadline = time.monotonic() + seconds

    async def task(index: int) -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            reservation = await store.admit(QuotaRequest(
                "proj_bench", f"user-{index}", 100, **LIMITS))  # type: ignore[arg-type]
            await store.settle(reservation, 60, 30)
            samples.append(time.perf_counter() - started)
            await trio.sleep(0.002)  # the rest of a request's work

    async with trio.open_nursery() as nursery:
        for index in range(TASKS):
            nursery.start_soon(task, index)
    return samples


def run_layout(directory: Path, layout: str, seconds: float) -> dict[str, float]:
    events_path = directory / f"{layout}-events.db"
    quota_path = events_path if layout != "separate" else directory / f"{layout}-quotas.db"
    open_database(events_path).conn.close()
    if layout == "no_indexes":
        _drop_history_indexes(events_path)
    events = EventStore(events_path, busy_timeout=5.0)
    quotas = SqliteQuotaStore(quota_path)
    stop, held = threading.Event(), []
    writer = threading.Thread(target=_event_writer, args=(events, stop, held))
    writer.start()
    try:
        samples = sorted(trio.run(_admissions, quotas, seconds))
    finally:
        stop.set()
        writer.join()
        events.close()
        quotas.close()
    return {"admit_settle_p50_us": statistics.median(samples) * 1e6,
            "admit_settle_p99_us": samples[int(len(samples) * 0.99) - 1] * 1e6,
            "writer_batch_ms": statistics.median(held) * 1000, "cycles": len(samples)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args(sys.argv[1:])
    rounds, seconds = (1, 2.0) if options.quick else (3, 4.0)
    layouts = ("same", "no_indexes", "separate")
    results: dict[str, list[dict[str, float]]] = {layout: [] for layout in layouts}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            for layout in layouts:
                directory = Path(tmp) / f"r{round_}"
                directory.mkdir(exist_ok=True)
                results[layout].append(run_layout(directory, layout, seconds))
    print(f"{TASKS} tasks admitting and settling; events at {EVENTS_PER_SECOND}/s in batches "
          f"every {BATCH_SECONDS * 1000:.0f} ms; median of {rounds} round(s)")
    print("| layout | admit+settle p50 | p99 | writer holds the lock per batch |")
    print("|---|---:|---:|---:|")
    for layout, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"| {layout} | {med['admit_settle_p50_us']:.0f} us | "
              f"{med['admit_settle_p99_us']:.0f} us | {med['writer_batch_ms']:.2f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
