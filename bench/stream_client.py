"""Many concurrent streaming clients for `bench compare`, over raw trio sockets so that the
client costs little next to the system under test.

Each client opens a keep-alive connection and posts streamed chat completions one after the
other until the deadline; it reconnects after an error. Printed as one JSON line: completed
streams per second, first-token latencies (request sent to the first text delta) and errors
(refused or reset connections, non-200 answers, streams cut before their end).

    python -m bench.stream_client URL KEY CLIENTS SECONDS [MODEL]
"""

from __future__ import annotations

import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson
import trio

#: A text delta with at least one character: the first token.
FIRST_TEXT = re.compile(rb'"content":\s*"[^"]')
CHUNKED_END = b"\r\n0\r\n\r\n"


@dataclass
class Tally:
    first_token_ms: list[float] = field(default_factory=list)
    completed: int = 0
    errors: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1


def request_bytes(url: str, key: str, model: str) -> bytes:
    parts = urlsplit(url)
    body = orjson.dumps({"model": model, "stream": True,
                         "messages": [{"role": "user", "content": "Where is my order?"}]})
    return (f"POST {parts.path} HTTP/1.1\r\nhost: {parts.netloc}\r\n"
            f"authorization: Bearer {key}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


async def _one_stream(stream: trio.SocketStream, request: bytes, tally: Tally,
                      deadline: float) -> bool:
    """One request and its whole answer; False when the connection cannot be reused."""
    started = time.perf_counter()
    await stream.send_all(request)
    received = bytearray()
    first: float | None = None
    while not received.endswith(CHUNKED_END):
        data = await stream.receive_some(65536)
        if not data:
            tally.error("cut")
            return False
        received += data
        if first is None and FIRST_TEXT.search(received):
            first = time.perf_counter() - started
    if not received.startswith(b"HTTP/1.1 200"):
        tally.error(received[:12].decode(errors="replace"))
        return False
    if time.monotonic() <= deadline:
        tally.completed += 1
        if first is not None:
            tally.first_token_ms.append(first * 1000)
    return True


async def _client(host: str, port: int, request: bytes, tally: Tally, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            tally.error("connect")
            await trio.sleep(0.05)
            continue
        async with stream:
            try:
                while time.monotonic() < deadline:
                    if not await _one_stream(stream, request, tally, deadline):
                        break
            except (trio.BrokenResourceError, ConnectionError):
                tally.error("reset")


async def run(url: str, key: str, clients: int, seconds: float, model: str) -> Tally:
    parts = urlsplit(url)
    request = request_bytes(url, key, model)
    tally = Tally()
    deadline = time.monotonic() + seconds
    # Streams still running at the deadline are abandoned: they are not counted.
    with trio.move_on_after(seconds + 1):
        async with trio.open_nursery() as nursery:
            for _ in range(clients):
                nursery.start_soon(_client, parts.hostname or "127.0.0.1", parts.port or 80,
                                   request, tally, deadline)
    return tally


def summary(tally: Tally, seconds: float) -> dict[str, float | int | dict[str, int]]:
    ordered = sorted(tally.first_token_ms) or [float("nan")]
    return {"streams_per_s": tally.completed / seconds,
            "first_token_p50_ms": statistics.median(ordered),
            "first_token_p99_ms": ordered[max(0, int(len(ordered) * 0.99) - 1)],
            "completed": tally.completed, "errors": tally.errors, "error_kinds": tally.kinds}


if __name__ == "__main__":
    url_, key_, clients_, seconds_ = sys.argv[1:5]
    model_ = sys.argv[5] if len(sys.argv) > 5 else "gpt-slow"
    result = trio.run(run, url_, key_, int(clients_), float(seconds_), model_)
    print(orjson.dumps(summary(result, float(seconds_))).decode())
