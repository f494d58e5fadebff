"""SIGTERM during 20 concurrent governed streams of a real server (1 and 2 worker processes),
and one request whose whole answer would come long after the grace period (a 503 then).

Half the streams are short (they end within the grace period) and must complete normally; the
other half would run long after it and must end with their API's own error frame
(`server_shutting_down`). Meanwhile the server accepts no new connection. The server exits 0,
and the database holds exactly one event per stream, with the outcome each one had.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import httpx2
import pytest
import trio

from .conftest import Server, read_stream

# A short stream has up to about 1 s of scripted upstream delays left when SIGTERM comes: the
# grace period leaves it a wide margin on a loaded machine. A long stream lasts far longer
# than the grace period from its start, however long the 20 streams take to start.
GRACE = 8.0
SHORT = {"mode": "slow", "delay": 0.1, "chunks": ["a", "b", "c", "d", "e"]}
LONG = {"mode": "slow", "delay": 0.3, "chunks": [f"w{n} " for n in range(150)]}
STREAMS = 20


def _request(index: int) -> tuple[str, dict[str, Any], dict[str, Any], bool]:
    """(path, body, scenario, long?) of stream `index`: chat and messages, short and long."""
    long = index % 2 == 1
    if index % 4 < 2:
        body: dict[str, Any] = {"model": "gpt-x", "stream": True,
                                "messages": [{"role": "user", "content": f"stream {index}"}]}
        return "/policy/chat/completions", body, LONG if long else SHORT, long
    body = {"model": "claude-x", "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": f"stream {index}"}]}
    return "/policy/messages", body, LONG if long else SHORT, long


def _frames(raw: bytes) -> list[tuple[str | None, str]]:
    frames = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        frames.append((name, "\n".join(data)))
    return frames


async def _connections_refused(url: str, until: float) -> bool:
    """Whether a new connection to `url` is refused before `until` (time.monotonic())."""
    while time.monotonic() < until:
        try:
            async with httpx2.AsyncClient(timeout=2) as fresh:
                await fresh.get(url + "/healthz")
        except httpx2.ConnectError:
            return True
        except httpx2.TransportError:
            pass  # accepted into the backlog just before the listener closed: try again
        await trio.sleep(0.05)
    return False


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_finishes_short_streams_and_cuts_long_ones(make_server: Any,
                                                                 mock_upstream: Any,
                                                                 workers: int) -> None:
    server: Server = make_server(workers=workers, grace=GRACE)

    def whole_requests_upstream() -> int:
        return sum(1 for r in mock_upstream.requests
                   if isinstance(r.json, dict) and not r.json.get("stream")
                   and r.json.get("messages") == [{"role": "user", "content": "whole"}])

    whole_before = whole_requests_upstream()
    bodies: dict[int, bytes] = {}
    started = trio.Semaphore(0)  # released once per stream that has its first bytes

    async def stream(index: int, client: httpx2.AsyncClient) -> None:
        path, body, scenario, _ = _request(index)
        headers = server.headers(**{"x-policy-user": f"user-{index}",
                                    "x-mock-scenario": json.dumps(scenario)})
        bodies[index] = await read_stream(client, server.url + path, body, headers, started)

    whole: list[httpx2.Response] = []

    async def slow_whole_answer(client: httpx2.AsyncClient) -> None:
        # Not streamed, and the upstream takes far longer than the grace period.
        whole.append(await client.post(
            server.url + "/policy/chat/completions",
            json={"model": "gpt-x", "messages": [{"role": "user", "content": "whole"}]},
            headers=server.headers(**{"x-policy-user": "user-whole", "x-mock-scenario":
                                      json.dumps({"mode": "slow", "delay": 30})})))

    limits = httpx2.Limits(max_connections=STREAMS + 5)
    async with httpx2.AsyncClient(timeout=60, limits=limits) as client:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for index in range(STREAMS):
                    nursery.start_soon(stream, index, client)
                nursery.start_soon(slow_whole_answer, client)
                for _ in range(STREAMS):
                    await started.acquire()
                for _ in range(1000):  # until the whole request is in flight upstream
                    if whole_requests_upstream() > whole_before:
                        break
                    await trio.sleep(0.02)
                signalled_at = time.monotonic()
                os.killpg(server.process.pid, signal.SIGTERM)
                # Within the grace period, with the long streams still running: no new
                # connections once every worker has seen the signal (however late a loaded
                # machine schedules them).
                refused = await _connections_refused(server.url, signalled_at + GRACE - 1.0)
                assert refused, "a new connection was still served late in the grace period"
    took = time.monotonic() - signalled_at
    exit_code = await trio.to_thread.run_sync(server.process.wait, 60)
    assert exit_code == 0, server.log_path.read_text()[-3000:]
    assert took >= GRACE - 0.5  # the long streams were given the grace period

    for index in range(STREAMS):
        path, _, _, long = _request(index)
        frames = _frames(bodies[index])
        name, data = frames[-1]
        if not long:  # finished normally, with the API's own last frame
            assert (name, data) == (("message_stop", data) if "messages" in path
                                    else (None, "[DONE]")), frames[-1]
            continue
        error = json.loads(data)
        assert error["error"]["code"] == "server_shutting_down", error
        assert error["policy"]["project_id"] == "proj_ops"
        if "messages" in path:
            assert name == "error" and error["type"] == "error"
        else:
            assert name is None and error["error"]["type"] == "server_error"
        assert len(frames) > 3  # it did stream before being ended

    # The whole answer that could not come within the grace period: a 503, not a cut connection.
    (answer,) = whole
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "server_shutting_down"
    assert answer.json()["policy"]["project_id"] == "proj_ops"

    events = {event["policy_user"]: event for event in server.events()}
    assert len(server.events()) == STREAMS + 1  # one event per request, none lost
    assert (events["user-whole"]["outcome"], events["user-whole"]["status"]) == ("shutdown", 503)
    for index in range(STREAMS):
        _, _, _, long = _request(index)
        event = events[f"user-{index}"]
        assert (event["outcome"], event["status"]) == (
            ("shutdown", 503) if long else ("completed", 200)), event
    assert all(json.loads(line) for line in server.log_lines())
