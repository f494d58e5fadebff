"""`/metrics` and the JSON request log after known traffic, with 1 and 2 worker processes.

The module's server (one per worker count) receives a fixed mix of requests up front: allowed,
refused and quota-refused governed requests, governed streams, compat requests, unauthenticated
ones. The tests then compare every counter with that mix, and with the events in the database.
With 2 workers, the unauthenticated requests go on until both workers have served (each request
on its own connection), so the scrape (answered by either worker) must aggregate both.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mock_upstream import MockUpstream
from prometheus_client.parser import text_string_to_metric_families

from .conftest import REFUSED_WORD, Server, start_server

CHAT = "/policy/chat/completions"
MESSAGES = "/policy/messages"
COMPAT_CHAT = "/v1/chat/completions"
SECRET = "zebra-quartz-prompt-marker"
ALLOWED, STREAMS, REFUSED, COMPAT, QUOTA_TRIES = 4, 3, 2, 2, 3


@dataclass
class Traffic:
    server: Server
    unauthenticated: int = 0
    request_ids: dict[str, str] = field(default_factory=dict)
    responses: dict[str, httpx2.Response] = field(default_factory=dict)

    @property
    def sent(self) -> int:
        return (ALLOWED + STREAMS + REFUSED + COMPAT + QUOTA_TRIES + self.unauthenticated
                + len(self.responses))


def _chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-x", "messages": [{"role": "user", "content": text}], **extra}


def _send_traffic(server: Server) -> Traffic:
    traffic = Traffic(server)
    url = server.url
    for n in range(ALLOWED):
        response = httpx2.post(url + CHAT, json=_chat(f"{SECRET} allowed {n}"),
                              headers=server.headers(), timeout=10)
        assert response.status_code == 200, response.text
    for n in range(STREAMS):
        response = httpx2.post(url + MESSAGES, json={
            "model": "claude-x", "max_tokens": 32, "stream": True,
            "messages": [{"role": "user", "content": f"{SECRET} stream {n}"}]},
            headers=server.headers(), timeout=10)
        assert response.status_code == 200 and b"message_stop" in response.content
    for n in range(REFUSED):
        response = httpx2.post(url + CHAT, json=_chat(f"{SECRET} {REFUSED_WORD} {n}"),
                              headers=server.headers(), timeout=10)
        assert response.status_code == 403, response.text
    for n in range(COMPAT):
        response = httpx2.post(url + COMPAT_CHAT, json=_chat(f"{SECRET} compat {n}"),
                              headers=server.headers(), timeout=10)
        assert response.status_code == 200, response.text
    statuses = [httpx2.post(url + CHAT, json=_chat(f"{SECRET} quota {n}"),
                           headers=server.headers(server.quota_key), timeout=10).status_code
                for n in range(QUOTA_TRIES)]
    assert statuses == [200] + [429] * (QUOTA_TRIES - 1)
    # Request ids: a sane one is echoed, an insane one replaced, the upstream's kept aside.
    traffic.responses["sane_id"] = httpx2.post(
        url + CHAT, json=_chat(f"{SECRET} id"), timeout=10,
        headers=server.headers(**{"x-request-id": "client-req-0001"}))
    traffic.responses["insane_id"] = httpx2.post(
        url + CHAT, json=_chat(f"{SECRET} id"), timeout=10,
        headers=server.headers(**{"x-request-id": "x" * 300}))
    traffic.responses["upstream_id"] = httpx2.post(
        url + COMPAT_CHAT, json=_chat(f"{SECRET} id"), timeout=10,
        headers=server.headers(**{"x-mock-scenario": json.dumps(
            {"headers": {"x-request-id": "upstream-req-42"}})}))
    for response in traffic.responses.values():
        assert response.status_code == 200, response.text
    # Every worker serves at least one request (each on a new connection), up to a bound.
    while True:
        response = httpx2.post(url + COMPAT_CHAT, json=_chat(SECRET), timeout=10)
        assert response.status_code == 401
        traffic.unauthenticated += 1
        if len(_access_pids(server)) >= server.workers or traffic.unauthenticated >= 300:
            break
    return traffic


def _access_lines(server: Server) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in server.log_lines()]
    return [line for line in lines if line["logger"] == "gateway.access"]


def _access_pids(server: Server) -> set[int]:
    deadline = time.monotonic() + 2
    while True:  # the log line is written right after the response
        try:
            return {line["pid"] for line in _access_lines(server)}
        except json.JSONDecodeError:  # a line being written
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def traffic(request: pytest.FixtureRequest, mock_upstream: MockUpstream,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    root: Path = tmp_path_factory.mktemp(f"ops{request.param}")
    server = start_server(root, mock_upstream.url, workers=request.param)
    try:
        yield _send_traffic(server)
    finally:
        server.kill()


def _scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx2.get(server.url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_match_the_traffic(traffic: Traffic) -> None:
    server = traffic.server
    assert len(_access_pids(server)) == server.workers  # each worker served some of it
    # Events are written in the background and each worker publishes its count every second.
    expected_events = ALLOWED + STREAMS + REFUSED + QUOTA_TRIES + 2  # 2 request-id requests
    deadline = time.monotonic() + 20
    while True:
        samples = _scrape(server)
        written = _value(samples, "gateway_events_written_total")
        in_database = server.count_events()
        if written == in_database and len(server.events()) == expected_events:
            break
        assert time.monotonic() < deadline, (written, in_database, len(server.events()))
        time.sleep(0.2)
    for _ in range(2 * server.workers):  # whichever worker answers, the same numbers
        samples = _scrape(server)
        requests = {(s, a, st, d): _value(samples, "gateway_requests_total", surface=s, api=a,
                                          status=st, decision=d)
                    for s, a, st, d in [
                        ("policy", "chat.completions", "200", "allow"),
                        ("policy", "messages", "200", "allow"),
                        ("policy", "chat.completions", "403", "refuse"),
                        ("policy", "chat.completions", "429", "refuse"),
                        ("compat", "chat.completions", "200", "none"),
                        ("compat", "chat.completions", "401", "none")]}
        assert requests == {
            ("policy", "chat.completions", "200", "allow"): ALLOWED + 1 + 2,
            ("policy", "messages", "200", "allow"): STREAMS,
            ("policy", "chat.completions", "403", "refuse"): REFUSED,
            ("policy", "chat.completions", "429", "refuse"): QUOTA_TRIES - 1,
            ("compat", "chat.completions", "200", "none"): COMPAT + 1,
            ("compat", "chat.completions", "401", "none"): traffic.unauthenticated,
        }
        total = sum(v for (name, _), v in samples.items() if name == "gateway_requests_total")
        assert total == traffic.sent
        assert _value(samples, "gateway_quota_refusals_total", scope="project") == \
            QUOTA_TRIES - 1
        # Upstream time and overhead: one observation per request that reached the upstream.
        for histogram in ("gateway_upstream_seconds_count", "gateway_overhead_seconds_count"):
            assert _value(samples, histogram, surface="policy", api="chat.completions") == \
                ALLOWED + 1 + 2
            assert _value(samples, histogram, surface="policy", api="messages") == STREAMS
            assert _value(samples, histogram, surface="compat", api="chat.completions") == \
                COMPAT + 1
        assert _value(samples, "gateway_stream_first_byte_seconds_count", surface="policy",
                      api="messages") == STREAMS
        assert _value(samples, "gateway_active_streams", surface="policy", api="messages") == 0
        assert _value(samples, "gateway_event_queue_depth") == 0
        assert _value(samples, "gateway_events_dropped_total") == 0
        assert _value(samples, "gateway_events_written_total") == server.count_events()


def test_policy_reloads_are_counted_by_every_worker(traffic: Traffic) -> None:
    server = traffic.server
    before = _value(_scrape(server), "gateway_policy_reloads_total", result="success")
    (server.policies / "ops_open.pol").write_text(
        (server.policies / "ops_open.pol").read_text().replace('"Ops open"', '"Ops open 2"'))
    deadline = time.monotonic() + 15
    while True:
        samples = _scrape(server)
        reloads = _value(samples, "gateway_policy_reloads_total", result="success")
        if reloads == before + server.workers:
            break
        assert time.monotonic() < deadline, (before, reloads)
        time.sleep(0.2)
    assert _value(samples, "gateway_policy_reloads_total", result="error") == 0
    assert _value(samples, "gateway_policy_files_failing") == 0


def test_every_log_line_is_json_and_no_line_holds_the_prompt(traffic: Traffic) -> None:
    server = traffic.server
    text = server.log_path.read_text()
    assert SECRET not in text
    assert REFUSED_WORD not in text
    lines = [json.loads(line) for line in server.log_lines()]
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    access = [line for line in lines if line["logger"] == "gateway.access"]
    assert len(access) == traffic.sent  # one line per request (probes are DEBUG)
    assert len({line["request_id"] for line in access}) == len(access)
    governed = [line for line in access if line["surface"] == "policy"]
    assert len(governed) == ALLOWED + STREAMS + REFUSED + QUOTA_TRIES + 2
    for line in governed:
        assert line["project_id"].startswith("proj_ops")
        assert line["decision"] in ("allow", "refuse")
        assert line["duration_ms"] >= line.get("upstream_ms", 0) >= 0
    streams = [line for line in governed if line.get("stream")]
    assert len(streams) == STREAMS and all(line["first_byte_ms"] > 0 for line in streams)
    assert sorted(line["status"] for line in governed if line["decision"] == "refuse") == \
        [403] * REFUSED + [429] * (QUOTA_TRIES - 1)


def test_request_ids_are_echoed_when_sane_and_logged(traffic: Traffic) -> None:
    sane = traffic.responses["sane_id"].headers["x-request-id"]
    replaced = traffic.responses["insane_id"].headers["x-request-id"]
    upstream = traffic.responses["upstream_id"].headers
    assert sane == "client-req-0001"
    assert replaced != "x" * 300 and len(replaced) == 32 and int(replaced, 16) >= 0
    # The mock sends an id of its own besides the scenario's: all are kept aside.
    assert "upstream-req-42" in upstream["x-upstream-request-id"]
    assert "upstream-req-42" not in upstream["x-request-id"]
    logged = {line["request_id"]: line for line in _access_lines(traffic.server)}
    assert {sane, replaced, upstream["x-request-id"]} <= set(logged)
    assert logged[sane]["path"] == CHAT and logged[sane]["status"] == 200
    assert upstream.get_list("x-request-id") == [upstream["x-request-id"]]
