"""A slow streaming provider for `bench compare`: answers every POST with an OpenAI chat stream
of `frames` text deltas, `delay` seconds apart, over raw trio sockets (keep-alive, chunked).

It is built to stay out of the measurement: hundreds of concurrent streams cost it a few percent
of a core, where an h11 or httpx2 server would compete with the system under test.

    python -m bench.slow_upstream PORT [FRAMES] [DELAY]
"""

from __future__ import annotations

import sys

import orjson
import trio

WORDS = ("Your order shipped on Monday and should arrive by Thursday. Tracking is live in your "
         "account, under Orders. ").split(" ")
HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def frames(count: int) -> list[bytes]:
    """The stream's chunks: `count` text deltas, a usage frame and `[DONE]`, each one chunk."""
    base = {"id": "chatcmpl-slow", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "gpt-slow"}
    out = []
    for index in range(count):
        word = WORDS[index % len(WORDS)] + " "
        delta = {"role": "assistant", "content": word} if index == 0 else {"content": word}
        frame = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        out.append(_chunk(b"data: " + orjson.dumps(frame) + b"\n\n"))
    last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": count, "total_tokens": 12 + count}}
    out.append(_chunk(b"data: " + orjson.dumps(last) + b"\n\n"))
    out.append(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    return out


async def _read_request(stream: trio.SocketStream, pending: bytearray) -> bool:
    """Consume one request (head and content-length body) from `pending` and the socket;
    False when the client closed the connection."""
    while b"\r\n\r\n" not in pending:
        data = await stream.receive_some(65536)
        if not data:
            return False
        pending += data
    end = pending.index(b"\r\n\r\n") + 4
    length = 0
    for line in bytes(pending[:end]).split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(pending) < end + length:
        data = await stream.receive_some(65536)
        if not data:
            return False
        pending += data
    del pending[:end + length]
    return True


async def _serve_connection(stream: trio.SocketStream, chunks: list[bytes], delay: float) -> None:
    pending = bytearray()
    try:
        while await _read_request(stream, pending):
            await stream.send_all(HEAD)
            for chunk in chunks[:-2]:
                await trio.sleep(delay)
                await stream.send_all(chunk)
            await stream.send_all(chunks[-2] + chunks[-1])
    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
        pass  # the client went away mid-stream: nothing to answer
    finally:
        await stream.aclose()


async def serve(port: int, count: int, delay: float) -> None:
    chunks = frames(count)
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1", backlog=4096)

    async def handler(stream: trio.SocketStream) -> None:
        await _serve_connection(stream, chunks, delay)

    await trio.serve_listeners(handler, listeners)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    trio.run(serve, int(arguments[0]), int(arguments[1]) if len(arguments) > 1 else 20,
             float(arguments[2]) if len(arguments) > 2 else 0.05)
