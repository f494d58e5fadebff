"""A worker that sees its supervisor's shutdown event before its own copy of SIGTERM.

SIGTERM sent to the process group reaches each worker and the supervisor, which relays it to
the workers through a shared event; on a loaded machine the event can win. The worker's own
copy of the signal is then the same request, not a second one: the worker keeps draining, its
streams end with their API's error frame at the end of the grace period, and the server exits
0. Here the order is made certain: SIGTERM to the supervisor alone, then, once a worker drains
streams, SIGTERM to that worker.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import httpx2
import trio

from .conftest import Server, read_stream

GRACE = 4.0
#: Far longer than the grace period: the streams are still running when it ends.
LONG = {"mode": "slow", "delay": 0.3, "chunks": [f"w{n} " for n in range(150)]}
STREAMS = 6


def _draining_workers(server: Server) -> dict[int, int]:
    """pid -> streams in flight, of each worker that logged the start of its drain."""
    found = {}
    for line in server.log_lines():
        record = json.loads(line)
        if record["logger"] == "gateway.shutdown" and "in flight" in record["message"]:
            found[record["pid"]] = int(record["message"].split()[2])
    return found


async def _all_draining(server: Server, workers: int) -> dict[int, int]:
    with trio.fail_after(30):
        while True:
            draining = _draining_workers(server)
            if len(draining) == workers:
                return draining
            await trio.sleep(0.05)


async def test_a_worker_drains_on_although_its_own_sigterm_comes_after_the_supervisors(
        make_server: Any, mock_upstream: Any) -> None:
    server: Server = make_server(workers=2, grace=GRACE)
    bodies: list[bytes] = []
    started = trio.Semaphore(0)

    async def stream(index: int, client: httpx2.AsyncClient) -> None:
        headers = server.headers(**{"x-policy-user": f"user-{index}",
                                    "x-mock-scenario": json.dumps(LONG)})
        body = {"model": "gpt-x", "stream": True,
                "messages": [{"role": "user", "content": f"stream {index}"}]}
        bodies.append(await read_stream(client, server.url + "/policy/chat/completions", body,
                                        headers, started))

    limits = httpx2.Limits(max_connections=STREAMS + 2)
    async with httpx2.AsyncClient(timeout=60, limits=limits) as client:
        with trio.fail_after(90):
            async with trio.open_nursery() as nursery:
                for index in range(STREAMS):
                    nursery.start_soon(stream, index, client)
                for _ in range(STREAMS):
                    await started.acquire()
                signalled_at = time.monotonic()
                os.kill(server.process.pid, signal.SIGTERM)  # the supervisor alone
                draining = await _all_draining(server, server.workers)
                busy = [pid for pid, streams in draining.items() if streams]
                assert busy, draining
                for pid in busy:  # each still has streams until the grace period ends
                    os.kill(pid, signal.SIGTERM)
    assert time.monotonic() - signalled_at >= GRACE - 0.5, "streams ended before the grace"
    exit_code = await trio.to_thread.run_sync(server.process.wait, 60)
    assert exit_code == 0, server.log_path.read_text()[-3000:]
    assert len(bodies) == STREAMS
    for raw in bodies:  # ended by the gateway with the API's error frame, not cut
        last = raw.decode().strip().split("\n\n")[-1]
        assert json.loads(last.removeprefix("data: "))["error"]["code"] == (
            "server_shutting_down"), last
    assert not any("exiting at once" in line for line in server.log_lines())


async def test_a_second_sigterm_ends_a_draining_worker_at_once(make_server: Any,
                                                               mock_upstream: Any) -> None:
    grace = 60.0  # the drain would outlast the test: only the second signal can end it
    server: Server = make_server(workers=1, grace=grace)
    async with httpx2.AsyncClient(timeout=60) as client:
        headers = server.headers(**{"x-mock-scenario": json.dumps(LONG)})
        body = {"model": "gpt-x", "stream": True,
                "messages": [{"role": "user", "content": "stream"}]}
        async with client.stream("POST", server.url + "/policy/chat/completions", json=body,
                                 headers=headers) as response:
            assert response.status_code == 200
            chunks = response.aiter_bytes()  # held: the stream stays open until the end
            assert await chunks.__anext__()
            signalled_at = time.monotonic()
            os.killpg(server.process.pid, signal.SIGTERM)
            await _all_draining(server, 1)
            os.killpg(server.process.pid, signal.SIGTERM)
            exit_code = await trio.to_thread.run_sync(server.process.wait, 30)
    assert exit_code == -signal.SIGTERM
    assert time.monotonic() - signalled_at < grace / 2
    assert any("received SIGTERM again: exiting at once" in line for line in server.log_lines())
