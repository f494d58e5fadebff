"""A streamed exchange reads the upstream under one deadline per read: the nearest of the idle
timeout, the total timeout and the shutdown cut. Each must still end the stream at its own time
and with its own error (trio's autojump clock: time passes only while every task waits)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest
import trio

from gateway.adapters import CHAT
from gateway.config.settings import Timeouts
from gateway.errors import ShuttingDown, UpstreamTimeout
from gateway.http.draining import Draining
from gateway.upstream.exchange import Exchange

FRAME = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'


def upstream(every: float, frames: int | None = None) -> httpx2.MockTransport:
    """An event stream sending a frame every `every` seconds (forever when `frames` is None)."""
    async def body() -> AsyncIterator[bytes]:
        sent = 0
        while frames is None or sent < frames:
            yield FRAME
            sent += 1
            await trio.sleep(every)
        yield b"data: [DONE]\n\n"

    def handle(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"},
                               content=body())

    return httpx2.MockTransport(handle)


async def read_all(transport: httpx2.MockTransport, idle: float, total: float,
                   draining: Draining | None = None) -> tuple[int, BaseException | None]:
    """The batches the exchange yields and the error that ended it, if any."""
    async with httpx2.AsyncClient(transport=transport) as client:
        exchange = Exchange(client, client.build_request("POST", "http://upstream.test/"),
                            Timeouts(idle=idle, total=total))
        await exchange.start()
        batches = 0
        try:
            async for _ in exchange.frames(CHAT, draining):
                batches += 1
        except (UpstreamTimeout, ShuttingDown) as error:
            return batches, error
        finally:
            await exchange.aclose()
        return batches, None


async def test_a_whole_stream_reads_through(autojump_clock: trio.abc.Clock) -> None:
    draining = Draining()
    batches, error = await read_all(upstream(0.5, frames=3), idle=1, total=10, draining=draining)
    assert (batches, error) == (4, None)
    assert not draining.exchanges  # the stream left when it ended


async def test_silence_longer_than_idle_times_out_at_the_idle_deadline(
        autojump_clock: trio.abc.Clock) -> None:
    started = trio.current_time()
    batches, error = await read_all(upstream(5.0), idle=1.5, total=100)
    assert batches == 1 and isinstance(error, UpstreamTimeout)
    assert trio.current_time() - started == pytest.approx(1.5)


async def test_a_stream_longer_than_total_times_out_at_the_total_deadline(
        autojump_clock: trio.abc.Clock) -> None:
    started = trio.current_time()
    batches, error = await read_all(upstream(0.4), idle=1, total=2.1)
    assert isinstance(error, UpstreamTimeout)
    assert trio.current_time() - started == pytest.approx(2.1)
    assert batches == 6  # at 0, 0.4, ..., 2.0 s


async def test_the_grace_period_ending_during_a_read_cuts_it_then(
        autojump_clock: trio.abc.Clock) -> None:
    draining = Draining()
    outcome: list[tuple[int, BaseException | None]] = []

    async def stream() -> None:
        outcome.append(await read_all(upstream(10.0), idle=60, total=100, draining=draining))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream)
        await trio.sleep(1)  # the stream waits in its second read, with a deadline 60 s away
        assert len(draining.exchanges) == 1
        began = trio.current_time()
        draining.begin(2.5)
    (batches, error), = outcome
    assert batches == 1 and isinstance(error, ShuttingDown)
    assert trio.current_time() - began == pytest.approx(2.5)
    assert not draining.exchanges


async def test_a_read_started_after_the_grace_period_began_ends_with_it(
        autojump_clock: trio.abc.Clock) -> None:
    draining = Draining()
    draining.begin(3.0)
    began = trio.current_time()
    batches, error = await read_all(upstream(0.9), idle=60, total=100, draining=draining)
    assert isinstance(error, ShuttingDown)
    assert trio.current_time() - began == pytest.approx(3.0)
    assert batches == 4  # at 0, 0.9, 1.8 and 2.7 s: the one due at 3.6 s is not read


async def test_the_idle_timeout_before_the_cut_is_still_a_timeout(
        autojump_clock: trio.abc.Clock) -> None:
    draining = Draining()
    draining.begin(30.0)
    batches, error = await read_all(upstream(5.0), idle=2, total=100, draining=draining)
    assert batches == 1 and isinstance(error, UpstreamTimeout)


# --- whole answers: the wait for the head and the body read, each under one deadline ---------

def slow_answer(head_after: float, chunks: int = 0, every: float = 0.0) -> httpx2.MockTransport:
    """A JSON answer whose head comes after `head_after` seconds, then `chunks` body chunks
    `every` seconds apart."""
    async def body() -> AsyncIterator[bytes]:
        yield b'{"parts": ['
        for index in range(chunks):
            await trio.sleep(every)
            yield b"0," if index < chunks - 1 else b"0"
        yield b"]}"

    async def handle(request: httpx2.Request) -> httpx2.Response:
        await trio.sleep(head_after)
        return httpx2.Response(200, headers={"content-type": "application/json"},
                               content=body())

    return httpx2.MockTransport(handle)


async def whole(transport: httpx2.MockTransport, idle: float, total: float,
                draining: Draining | None = None) -> bytes | BaseException:
    """The whole body, or the error that ended the exchange; the exchange must have left
    `draining` either way."""
    async with httpx2.AsyncClient(transport=transport) as client:
        exchange = Exchange(client, client.build_request("POST", "http://upstream.test/"),
                            Timeouts(idle=idle, total=total))
        try:
            await exchange.start(draining)
            return await exchange.read_body()
        except (UpstreamTimeout, ShuttingDown) as error:
            return error
        finally:
            await exchange.aclose()
            assert draining is None or not draining.exchanges


async def test_a_slow_whole_body_within_its_deadlines_is_read(
        autojump_clock: trio.abc.Clock) -> None:
    # Each chunk comes within the idle timeout, and all of them within the total one.
    draining = Draining()
    body = await whole(slow_answer(0.5, chunks=5, every=0.8), idle=1, total=10,
                       draining=draining)
    assert body == b'{"parts": [0,0,0,0,0]}'


async def test_a_head_later_than_idle_is_a_timeout_at_the_idle_deadline(
        autojump_clock: trio.abc.Clock) -> None:
    started = trio.current_time()
    error = await whole(slow_answer(9.0), idle=2, total=100)
    assert isinstance(error, UpstreamTimeout) and "did not answer" in str(error)
    assert trio.current_time() - started == pytest.approx(2)


async def test_a_whole_body_read_stops_at_the_idle_deadline_between_chunks(
        autojump_clock: trio.abc.Clock) -> None:
    started = trio.current_time()
    error = await whole(slow_answer(0.5, chunks=3, every=4.0), idle=1.5, total=100)
    assert isinstance(error, UpstreamTimeout) and "stopped sending" in str(error)
    assert trio.current_time() - started == pytest.approx(2.0)  # head at 0.5, then 1.5 idle


async def test_a_whole_body_trickling_in_stops_at_the_total_deadline(
        autojump_clock: trio.abc.Clock) -> None:
    # No gap reaches the idle timeout, but the answer as a whole takes too long: each chunk
    # moves the read's deadline, never past the total one.
    started = trio.current_time()
    error = await whole(slow_answer(0.2, chunks=50, every=0.5), idle=1, total=3.1)
    assert isinstance(error, UpstreamTimeout)
    assert trio.current_time() - started == pytest.approx(3.1)


async def test_the_grace_period_ending_before_the_head_is_a_shutdown_at_the_cut(
        autojump_clock: trio.abc.Clock) -> None:
    draining = Draining()
    outcome: list[bytes | BaseException] = []

    async def call() -> None:
        outcome.append(await whole(slow_answer(50.0), idle=60, total=100, draining=draining))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await trio.sleep(1)  # waiting for the head, with a deadline 60 s away
        assert len(draining.exchanges) == 1
        began = trio.current_time()
        draining.begin(2.5)
    error, = outcome
    assert isinstance(error, ShuttingDown) and "grace period" in str(error)
    assert trio.current_time() - began == pytest.approx(2.5)


async def test_the_grace_period_ending_during_a_whole_body_is_a_shutdown_at_the_cut(
        autojump_clock: trio.abc.Clock) -> None:
    draining = Draining()
    outcome: list[bytes | BaseException] = []

    async def call() -> None:
        outcome.append(await whole(slow_answer(0.1, chunks=3, every=20.0), idle=60, total=100,
                                   draining=draining))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await trio.sleep(1)  # the head came; the body waits for its first chunk
        began = trio.current_time()
        draining.begin(4.0)
    error, = outcome
    assert isinstance(error, ShuttingDown)
    assert trio.current_time() - began == pytest.approx(4.0)


async def test_a_whole_answer_finished_within_the_grace_period_is_not_cut(
        autojump_clock: trio.abc.Clock) -> None:
    draining = Draining()
    draining.begin(10.0)
    body = await whole(slow_answer(1.0, chunks=2, every=1.0), idle=60, total=100,
                       draining=draining)
    assert body == b'{"parts": [0,0]}'


# --- pools: one per provider -------------------------------------------------------------

async def test_each_provider_has_a_pool_of_its_own() -> None:
    # httpcore2 walks every connection of a pool for each request: the idle connections a
    # burst of streams leaves with one provider must not slow down another's requests.
    from gateway.config import Config
    from gateway.upstream.exchange import Upstreams

    config = Config.from_mapping({"providers": {
        "a": {"kind": "openai", "base_url": "http://a.test/v1", "api_key": "k"},
        "b": {"kind": "anthropic", "base_url": "http://b.test", "api_key": "k"}}}, env={})
    upstreams = Upstreams(config, transport=httpx2.MockTransport(lambda r: httpx2.Response(200)))
    await upstreams.open()
    a, b = config.providers["a"], config.providers["b"]
    clients = (upstreams.client_for(a), upstreams.client_for(b))
    assert clients[0] is not clients[1]
    assert upstreams.client_for(a) is clients[0]  # the same pool for every request
    request = upstreams.build_request(a, "POST", "/chat/completions", {}, b"{}")
    assert str(request.url) == "http://a.test/v1/chat/completions"
    await upstreams.aclose()
    assert all(client.is_closed for client in clients)
