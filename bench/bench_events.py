"""Policy events benchmark.

    .venv/bin/python bench/bench_events.py [--json out.json] [--quick] [--no-http]

1. The writer alone: enforcement events (the real shape, from `base_event`) are put on a
   `QueueSink` while `EventWriter` (default `[events]` settings) writes them to a fresh SQLite
   file; events/second from the first put to the last commit, and the cost of one `emit`.
2. Two gateway processes (`python -m gateway serve`, one worker each, same policies, same mock
   upstream), one with a webhook connector whose destination takes 2 s per POST, one with no
   connector, plus a second gateway with no connector (the A/A pair says how large a difference
   between two identical processes is on this machine, i.e. what "measurable" means).
   Sequential `/policy/chat/completions` requests alternate between the three; p50/p99 of each
   and their ratios. Then the gateway's own throughput (no connector, 16 concurrent
   clients), to compare with the writer's.
3. PostgreSQL next to SQLite, in the same run (bench/events_postgres.py): a real PostgreSQL
   (initdb in a temporary directory, as the tests run it) and its writer's events/second
   beside the SQLite writer's, alone and as three replicas writing at once; then `/policy`
   p50/p99 of a gateway whose events go to PostgreSQL beside one whose events go to SQLite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import httpx2  # noqa: E402
import trio  # noqa: E402
import trio.lowlevel  # noqa: E402

from gateway.db import open_database  # noqa: E402
from gateway.events.sink import QueueSink, base_event  # noqa: E402
from gateway.events.store import (  # noqa: E402
    EventSettings,
    EventStorage,
    EventStore,
    EventWriter,
)
from gateway.identity.keys import IdentityStore  # noqa: E402
from gateway.identity.projects import ProjectStore  # noqa: E402

DESTINATION_SECONDS = 2.0
BODY = {"model": "gpt-x", "messages": [{"role": "user", "content": "Where is my order?"}]}


def sample_event(index: int) -> dict[str, Any]:
    return base_event(
        "enforcement", user_id=None, org_id="acct_bench", policy_id="support_bot",
        policy_name="Support bot", policy_revision=1, data_classification="internal",
        decision="allow", effective_decision="allow", enforced=True, rollout_mode="enforced",
        reason_code=None, triggered_categories=[], allowlist_hits=["order"], denylist_hits=[],
        redacted_spans={}, policy_target="chat.completions", policy_user=f"user-{index % 500}",
        quota_subject=f"user-{index % 500}", project_id="proj_bench", project_label="Bench",
        model="gpt-x", surface="chat.completions", stream=False, status=200,
        usage={"input_tokens": 12, "output_tokens": 40}, latency_ms=4.2, overhead_ms=1.1,
        outcome="completed")


# --- 1. the writer alone --------------------------------------------------------------------


async def _writer_run(path: Path | EventStorage, total: int) -> dict[str, Any]:
    """`path`: a SQLite file, or a store of its own (the PostgreSQL one)."""
    settings = EventSettings(queue_capacity=total)
    sink = QueueSink(settings.queue_capacity, recent=0)
    writer = EventWriter(sink, path if not isinstance(path, Path) else EventStore(path),
                         settings)
    events = [sample_event(i) for i in range(total)]
    all_written = trio.Event()
    writer.on_written.append(lambda: all_written.set() if writer.written >= total else None)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        started = time.perf_counter()
        emit_seconds = 0.0
        for offset in range(0, total, 1000):  # a producer that yields, like requests do
            emit_started = time.perf_counter()
            for event in events[offset:offset + 1000]:
                sink.emit(event)
            emit_seconds += time.perf_counter() - emit_started
            await trio.lowlevel.checkpoint()
        await all_written.wait()
        elapsed = time.perf_counter() - started
        await writer.drain()
        nursery.cancel_scope.cancel()
    assert sink.dropped == 0 and writer.failures == 0
    return {"events": total, "seconds": round(elapsed, 3),
            "events_per_second": round(total / elapsed),
            "emit_us": round(emit_seconds / total * 1e6, 2)}


def writer_figures(directory: Path, quick: bool) -> dict[str, Any]:
    total = 10_000 if quick else 50_000
    trio.run(_writer_run, directory / "warmup.db", 2_000)
    runs = [trio.run(_writer_run, directory / f"writer{i}.db", total) for i in range(3)]
    best = max(runs, key=lambda r: r["events_per_second"])
    return {**best, "runs_events_per_second": [r["events_per_second"] for r in runs]}


# --- 2. the gateway with a slow webhook -----------------------------------------------------


class SlowDestination:
    """A webhook destination that takes DESTINATION_SECONDS to answer each POST."""

    def __init__(self) -> None:
        self.received = 0
        destination = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                time.sleep(DESTINATION_SECONDS)
                destination.received += 1
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bench_key(db: Any) -> str:
    """An account, its project under the support_bot policy, and the project's key."""
    account = IdentityStore(db).create_account("bench", "control")
    ProjectStore(db).create("proj_bench", account_id=account.id, name="Bench",
                            policy_id="support_bot")
    return IdentityStore(db).create_key(account.id, project_id="proj_bench")[1]


@contextmanager
def gateway(root: Path, mock_url: str, connector: dict[str, Any] | None,
            database_url: str | None = None) -> Iterator[tuple[str, str]]:
    """A `python -m gateway serve` process (one worker): yields (url, key). With
    `database_url`, its events go to that PostgreSQL."""
    from e2e.harness import UPSTREAM_ANTHROPIC_KEY, UPSTREAM_OPENAI_KEY

    root.mkdir(parents=True)
    policies = root / "policies"
    shutil.copytree(ROOT / "policies", policies)
    db_path, port = root / "gateway.db", _free_port()
    text = (f'[server]\nhost = "127.0.0.1"\nport = {port}\nshutdown_grace = 1\n\n'
            f'[database]\npath = "{db_path}"\n'
            + (f'url = "{database_url}"\n' if database_url else "")
            + f'\n[policies]\ndirectory = "{policies}"\n\n'
            f'[providers.openai]\nkind = "openai"\nbase_url = "{mock_url}/v1"\n'
            f'api_key = "{UPSTREAM_OPENAI_KEY}"\n\n'
            f'[providers.anthropic]\nkind = "anthropic"\nbase_url = "{mock_url}"\n'
            f'api_key = "{UPSTREAM_ANTHROPIC_KEY}"\n\n')
    if connector is not None:
        text += "[[events.connectors]]\n" + "".join(
            f"{name} = {json.dumps(value)}\n" for name, value in connector.items())
    (root / "gateway.toml").write_text(text)
    if database_url is None:
        db = open_database(db_path)
        try:
            key = _bench_key(db)
        finally:
            db.conn.close()
    else:  # accounts, keys and projects are in PostgreSQL too
        from gateway.storage.postgres import Postgres
        from gateway.storage.settings import PostgresSettings
        from gateway.storage.sql import PostgresSql

        with Postgres(PostgresSettings(url=database_url, pool_min_size=0,
                                       pool_max_size=1)) as pg:
            key = _bench_key(PostgresSql(pg))
    log = (root / "gateway.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(root / "gateway.toml")],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError((root / "gateway.log").read_text())
            try:
                if httpx2.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start in 60 s")
            time.sleep(0.1)
        yield url, key
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        log.close()


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 3),
            "p99_ms": round(ordered[max(int(len(ordered) * 0.99) - 1, 0)] * 1000, 3)}


def _throughput(url: str, key: str, clients: int, per_client: int) -> float:
    def run() -> None:
        with httpx2.Client(base_url=url, timeout=30) as http:
            for _ in range(per_client):
                response = http.post("/policy/chat/completions", json=BODY,
                                     headers={"authorization": f"Bearer {key}"})
                assert response.status_code == 200, response.text

    threads = [threading.Thread(target=run) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return clients * per_client / (time.perf_counter() - started)


def alternating_times(gateways: dict[str, tuple[str, str]], rounds: int, warmup: int
                      ) -> dict[str, list[float]]:
    """Seconds of each `/policy/chat/completions` request after the warm-up, by gateway
    (name -> (url, key)); one request to each in turn, so the machine's load falls on all
    alike and the samples pair up round by round."""
    times: dict[str, list[float]] = {name: [] for name in gateways}
    clients = {name: httpx2.Client(base_url=url, timeout=30,
                                  headers={"authorization": f"Bearer {key}"})
               for name, (url, key) in gateways.items()}
    try:
        for index in range(rounds + warmup):
            for name, client in clients.items():
                started = time.perf_counter()
                response = client.post("/policy/chat/completions", json=BODY)
                elapsed = time.perf_counter() - started
                assert response.status_code == 200, response.text
                if index >= warmup:
                    times[name].append(elapsed)
    finally:
        for client in clients.values():
            client.close()
    return times


def http_figures(directory: Path, quick: bool) -> dict[str, Any]:
    from mock_upstream import MockUpstream

    rounds, warmup = (200, 20) if quick else (1000, 50)
    destination = SlowDestination()
    hook = {"name": "slow-hook", "type": "webhook", "url": destination.url,
            "timeout": DESTINATION_SECONDS * 3}
    try:
        with MockUpstream() as upstream, \
                gateway(directory / "with_hook", upstream.url, hook) as with_hook, \
                gateway(directory / "without", upstream.url, None) as without, \
                gateway(directory / "without_again", upstream.url, None) as again:
            times = alternating_times({"webhook": with_hook, "none": without,
                                       "none_again": again}, rounds, warmup)
            requests_per_second = _throughput(*without, clients=16,
                                              per_client=25 if quick else 100)
            delivered = destination.received
    finally:
        destination.close()
    hooked, plain = percentiles(times["webhook"]), percentiles(times["none"])
    twin = percentiles(times["none_again"])
    paired = statistics.median(a - b for a, b in zip(times["webhook"], times["none"],
                                                     strict=True))
    return {"with_slow_webhook": hooked, "no_connector": plain,
            "p50_ratio": round(hooked["p50_ms"] / plain["p50_ms"], 3),
            "p99_ratio": round(hooked["p99_ms"] / plain["p99_ms"], 3),
            "paired_median_difference_ms": round(paired * 1000, 3),
            "a_a_noise": {"no_connector_again": twin,
                          "p50_ratio": round(twin["p50_ms"] / plain["p50_ms"], 3),
                          "p99_ratio": round(twin["p99_ms"] / plain["p99_ms"], 3)},
            "requests_each": rounds, "webhook_posts_delivered_meanwhile": delivered,
            "gateway_requests_per_second_16_clients": round(requests_per_second, 1)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-http", action="store_true", help="skip the gateway measurement")
    parser.add_argument("--no-postgres", action="store_true",
                        help="skip PostgreSQL next to SQLite (needs the postgresql package)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[str, Any] = {"writer": writer_figures(Path(tmp), args.quick)}
        print(json.dumps(results["writer"], indent=2), flush=True)
        if not args.no_http:
            results["http"] = http_figures(Path(tmp), args.quick)
            rate = results["http"]["gateway_requests_per_second_16_clients"]
            results["writer_to_gateway_throughput_ratio"] = round(
                results["writer"]["events_per_second"] / rate, 1)
            print(json.dumps({k: v for k, v in results.items() if k != "writer"}, indent=2))
        if not args.no_postgres:
            from bench.events_postgres import postgres_figures

            results["postgres"] = postgres_figures(Path(tmp), args.quick, not args.no_http)
            print(json.dumps(results["postgres"], indent=2), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
