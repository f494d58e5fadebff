"""Real servers for integration tests: hypercorn (trio worker) on 127.0.0.1, in a thread.

A background thread with its own `trio.run` lets sync SDK clients (which block) and async tests
both talk to the server over real sockets, exactly as users do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve


class ThreadServer:
    """Serve the ASGI app made by `app_factory` until `stop()`."""

    def __init__(self, app_factory: Callable[[], Any], *, graceful_timeout: float = 2.0) -> None:
        self._app_factory = app_factory
        self._graceful_timeout = graceful_timeout
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._shutdown: trio.Event | None = None
        self._error: BaseException | None = None
        self.url = ""
        self.app: Any = None

    def start(self) -> ThreadServer:
        self._thread = threading.Thread(target=self._run, name="test-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("server did not start in 30 s")
        if self._error is not None:
            raise RuntimeError("server failed to start") from self._error
        return self

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # surfaced by start()/stop() in the test thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._shutdown = trio.Event()
        self.app = self._app_factory()
        config = HypercornConfig()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        config.errorlog = None
        config.graceful_timeout = self._graceful_timeout
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                lambda task_status: serve(self.app, config, shutdown_trigger=self._shutdown.wait,
                                          task_status=task_status)
            )
            self.url = binds[0]
            self._ready.set()

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._token is not None and self._shutdown is not None:
            try:
                trio.from_thread.run_sync(self._shutdown.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join(30)
        self._thread = None
        if self._error is not None:
            raise RuntimeError("server failed") from self._error

    def __enter__(self) -> ThreadServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def answer_lifespan(receive: Any, send: Any) -> None:
    """The ASGI lifespan of a test server with nothing to start or stop."""
    while True:
        message = await receive()
        kind = message["type"].removeprefix("lifespan.")
        await send({"type": f"lifespan.{kind}.complete"})
        if kind == "shutdown":
            return


async def read_body(receive: Any) -> bytes:
    """A request's whole body, however many ASGI messages it came in."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


@dataclass(frozen=True)
class Recorded:
    """One request a `RecordingServer` received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def _ok(request: Recorded) -> bytes:
    return b'{"ok": true}'


class RecordingServer:
    """A listener on 127.0.0.1 that records every request it gets, in order, and answers each
    with status 200 and the JSON `answer(request)` returns: the stand-in for a destination
    (a webhook, an SSRF target, an MCP server) whose checks are on what reached it."""

    def __init__(self, answer: Callable[[Recorded], bytes] = _ok) -> None:
        self.received: list[Recorded] = []
        self.lock = threading.Lock()
        self._answer = answer
        self.server = ThreadServer(lambda: self._app)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def bodies(self) -> list[bytes]:
        with self.lock:
            return [request.body for request in self.received]

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[Recorded]:
        """What was received once `count` requests were, or when `timeout` seconds passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        with self.lock:
            return list(self.received)

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        body = await read_body(receive)
        request = Recorded(scope["method"], scope["path"],
                           {k.decode(): v.decode("latin-1") for k, v in scope["headers"]}, body)
        with self.lock:
            self.received.append(request)
        answer = self._answer(request)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})

    def __enter__(self) -> RecordingServer:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
