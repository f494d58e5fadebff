"""Driving the gateway app in-process, as hypercorn does, and recording what it sends.

`serving(app)` runs the ASGI lifespan (so `before_serving` opens the state in the app's
nursery); `call(...)` sends one HTTP request and returns every ASGI message the app sent, in
order. Unlike `httpx2.ASGITransport`, nothing is buffered, so tests can assert the exact sequence
of a stream, and `disconnect` can end the client's side at any point.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio

Message = dict[str, Any]


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[None]:
    to_app_send, to_app_receive = trio.open_memory_channel[Message](4)
    from_app_send, from_app_receive = trio.open_memory_channel[Message](4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(app, {"type": "lifespan", "asgi": {"version": "3.0"}},
                           to_app_receive.receive, from_app_send.send)
        await to_app_send.send({"type": "lifespan.startup"})
        started = await from_app_receive.receive()
        assert started["type"] == "lifespan.startup.complete", started
        try:
            yield
        finally:
            with trio.CancelScope(shield=True):
                await to_app_send.send({"type": "lifespan.shutdown"})
                stopped = await from_app_receive.receive()
                assert stopped["type"] == "lifespan.shutdown.complete", stopped


class Client:
    """One request's client side: its body, then (when told) a disconnect."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._sent_body = False
        self.gone = trio.Event()
        self.sent: list[Message] = []
        self._arrived = trio.Event()

    async def receive(self) -> Message:
        if not self._sent_body:
            self._sent_body = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        self._arrived.set()

    async def wait_for(self, count: int) -> None:
        """Until the app has sent `count` messages."""
        while len(self.sent) < count:
            self._arrived = trio.Event()
            await self._arrived.wait()


def scope(method: str, path: str, headers: dict[str, str]) -> Message:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080),
    }


async def call(app: Any, method: str, path: str, *, headers: dict[str, str] | None = None,
               json: Any = None, client: Client | None = None) -> list[Message]:
    """Every ASGI message the app sent for one request."""
    body = orjson.dumps(json) if json is not None else b""
    client = client or Client(body)
    all_headers = {"content-type": "application/json", **(headers or {})}
    await app(scope(method, path, all_headers), client.receive, client.send)
    return client.sent


def shape(messages: list[Message]) -> list[tuple[Any, ...]]:
    """The sequence as (type, status) and (type, more_body) pairs, for exact comparisons."""
    out: list[tuple[Any, ...]] = []
    for message in messages:
        if message["type"] == "http.response.start":
            out.append(("start", message["status"]))
        else:
            out.append(("body", message.get("more_body", False)))
    return out


def header(messages: list[Message], name: str) -> str | None:
    for key, value in messages[0]["headers"]:
        if key.decode().lower() == name:
            return str(value.decode())
    return None


def body_bytes(messages: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
