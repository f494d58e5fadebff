"""Prometheus metrics (docs/operations.md): `GET /metrics` in the text exposition format.

Each app owns its metrics in its own `CollectorRegistry`, so several gateways in one process (the
tests) never mix their counts. With several worker processes (`serve --workers N`), `serve` sets
`PROMETHEUS_MULTIPROC_DIR` before the workers start: prometheus-client then keeps every value in
a per-process file there, and a scrape answered by any worker aggregates all of them (counters
and histograms summed; gauges per their `multiprocess_mode`).

The request metrics are observed once per request from its `RequestRecord` (a handful of
counter/histogram calls). The event pipeline's numbers live in `QueueSink`/`EventWriter`
counters; `sync_events` copies them into metrics at scrape time and, so that a scrape answered
by another worker sees them, every `SYNC_INTERVAL` seconds in every worker.
"""

from __future__ import annotations

import os
from typing import Any

import trio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

from gateway.http.access_log import RequestRecord

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SYNC_INTERVAL = 1.0
PATH = "/metrics"
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Upstream calls of LLM APIs take from milliseconds (errors, cached) to minutes (long streams).
UPSTREAM_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
#: The gateway's own time: a fraction of a millisecond when all is well.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 1)
FIRST_BYTE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
REQUEST_LABELS = ("surface", "api", "status", "decision")
ROUTE_LABELS = ("surface", "api")


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class GatewayMetrics:
    """The metrics of one app. `observe(record)` after each request; `render()` for a scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gateway_requests", "Requests answered, by surface, API, final status and the "
            "effective policy decision (`none` when no decision was made).", REQUEST_LABELS,
            registry=r)
        self.upstream_seconds = Histogram(
            "gateway_upstream_seconds", "Time in the upstream exchange, from sending the "
            "request to the end of the response or stream.", ROUTE_LABELS,
            buckets=UPSTREAM_BUCKETS, registry=r)
        self.overhead_seconds = Histogram(
            "gateway_overhead_seconds", "Time spent in the gateway itself: total time minus "
            "upstream time, for requests that called the upstream.", ROUTE_LABELS,
            buckets=OVERHEAD_BUCKETS, registry=r)
        self.first_byte_seconds = Histogram(
            "gateway_stream_first_byte_seconds", "Streams: time from the request's arrival to "
            "the first body bytes sent to the client.", ROUTE_LABELS,
            buckets=FIRST_BYTE_BUCKETS, registry=r)
        self.active_streams = Gauge(
            "gateway_active_streams", "Streams being relayed now.", ROUTE_LABELS,
            multiprocess_mode="livesum", registry=r)
        self.quota_refusals = Counter(
            "gateway_quota_refusals", "Requests refused by a quota (429), by scope.",
            ("scope",), registry=r)
        self.policy_reloads = Counter(
            "gateway_policy_reloads", "Loads of the policies directory after a change, by "
            "result (`error`: the directory could not be loaded). Each worker reloads.",
            ("result",), registry=r)
        self.policy_files_failing = Gauge(
            "gateway_policy_files_failing", "Policy files that fail their check now (their "
            "last good revision stays in force).", multiprocess_mode="livemax", registry=r)
        self.degraded = Gauge(
            "gateway_degraded", "1 while the gateway is ready but degraded: a policy file fails "
            "its check (see /readyz with the admin token).", multiprocess_mode="livemax",
            registry=r)
        self.event_queue_depth = Gauge(
            "gateway_event_queue_depth", "Policy events accepted and not yet written.",
            multiprocess_mode="livesum", registry=r)
        self.events_written = Counter(
            "gateway_events_written", "Policy events written to the database.", registry=r)
        self.events_dropped = Counter(
            "gateway_events_dropped", "Policy events dropped because the queue was full or "
            "closed.", registry=r)
        self.event_write_failures = Counter(
            "gateway_event_write_failures", "Failed attempts to write a batch of policy events "
            "(retried).", registry=r)
        self.quota_store_errors = Counter(
            "gateway_quota_store_errors", "Admissions the shared quota store (Redis) did not "
            "answer, by what happened: `closed` (503 quota_unavailable) or `open` (admitted "
            "with quotas not enforced).", ("mode",), registry=r)
        self._seen = {"written": 0, "dropped": 0, "failures": 0}
        self._seen_store_errors = {"closed": 0, "open": 0}
        # Labelled children, looked up once per label set (`labels()` takes a lock each time).
        self._request_children: dict[tuple[str, str, int, str], Any] = {}
        self._route_children: dict[tuple[str, str], tuple[Any, Any, Any]] = {}

    # --- per request ---------------------------------------------------------------------

    def observe(self, record: RequestRecord, duration: float) -> None:
        surface, api = record.surface, record.api
        key = (surface, api, record.status, record.decision or "none")
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(
                surface, api, str(record.status), key[3])
        counter.inc()
        if record.quota_refusal is not None:
            scope = "user" if record.quota_refusal.startswith("USER") else "project"
            self.quota_refusals.labels(scope).inc()
        if record.upstream_seconds is None and record.first_byte_seconds is None:
            return
        route = self._route_children.get((surface, api))
        if route is None:
            route = self._route_children[(surface, api)] = (
                self.upstream_seconds.labels(surface, api),
                self.overhead_seconds.labels(surface, api),
                self.first_byte_seconds.labels(surface, api))
        if record.upstream_seconds is not None:
            route[0].observe(record.upstream_seconds)
            route[1].observe(max(duration - record.upstream_seconds, 0.0))
        if record.first_byte_seconds is not None:
            route[2].observe(record.first_byte_seconds)

    # --- policies ------------------------------------------------------------------------

    def policy_reloaded(self, registry: Any) -> None:
        """The reloader's hook: `registry` is the new snapshot, None when loading failed."""
        if registry is None:
            self.policy_reloads.labels("error").inc()
            return
        self.policy_reloads.labels("success").inc()
        self.policy_files_failing.set(len(registry.errors))
        self.degraded.set(1 if registry.errors else 0)

    # --- events --------------------------------------------------------------------------

    def sync_events(self, state: Any) -> None:
        """Copy the event pipeline's counters of this worker into the metrics."""
        writer, sink = state.event_writer, state.event_sink
        self.event_queue_depth.set(writer.held)
        for name, counter, value in (("written", self.events_written, writer.written),
                                     ("dropped", self.events_dropped, sink.dropped),
                                     ("failures", self.event_write_failures, writer.failures)):
            delta = value - self._seen[name]
            if delta > 0:
                counter.inc(delta)
                self._seen[name] = value
        for mode, value in getattr(state.quotas, "store_errors", {}).items():
            delta = value - self._seen_store_errors[mode]
            if delta > 0:
                self.quota_store_errors.labels(mode).inc(delta)
                self._seen_store_errors[mode] = value

    async def run_sync(self, state: Any,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the event metrics of this worker current, for scrapes answered by others."""
        task_status.started()
        while True:
            self.sync_events(state)
            await trio.sleep(SYNC_INTERVAL)

    # --- scrape --------------------------------------------------------------------------

    def render(self, state: Any) -> bytes:
        self.sync_events(state)
        if state.serving:
            self.policy_files_failing.set(len(state.registry.errors))
            self.degraded.set(1 if state.registry.errors else 0)
        if multiprocess_enabled():
            registry = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


# --- the serving parent (multiprocess mode) ----------------------------------------------------

def prepare_multiprocess_dir(directory: str) -> None:
    """Empty `directory` of value files left by an earlier run: counters start at zero."""
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


def worker_exited(pid: int) -> None:
    """Drop a dead worker from the `live*` gauges (active streams, queue depth)."""
    if multiprocess_enabled():
        prometheus_multiprocess.mark_process_dead(pid)
