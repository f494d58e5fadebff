"""A real HTTP/1.1 provider double on 127.0.0.1 for integration tests, with fault modes.

It answers in the exact OpenAI and Anthropic wire formats (it reuses `gateway.upstream.echo`) over a real
socket that it fully controls (trio + h11), so tests can make it misbehave the way real
providers and networks do: slow streams, connection resets mid-stream, error statuses, broken
event streams, hangs and early closes.

Each request picks its behaviour with a header ``x-mock-scenario: <json>`` (the gateway forwards
non-credential client headers; SDKs send it with ``extra_headers``), or, as a fallback, with a
model name ``mock-<mode>`` (``mock-slow``, ``mock-reset-midstream``, ``mock-status-429``, ...).
Scenario fields (all optional):

- ``mode``: ``normal`` (default), ``slow`` (sleep ``delay`` seconds before each frame, or before a
  JSON answer), ``reset_midstream`` (send ``after_frames`` frames, or half a JSON body, then abort
  the TCP connection with an RST), ``status`` (answer ``status`` with the API's own error body;
  429 and 529/503 carry ``Retry-After: <retry_after>``), ``malformed_sse`` (``after_frames`` valid
  frames, then a ``data:`` line that is not JSON, then the end of the body; a JSON answer is cut in
  half), ``hang`` (read the request and never answer), ``close_before_headers`` (read the request
  and close the connection without a byte).
- ``chunks`` (the streamed text pieces), ``text`` (the reply text), ``usage`` (token overrides,
  see `gateway.upstream.echo.Reply.for_request`), ``headers`` (extra response headers),
  ``tool_calls`` (calls the answer makes after its text: ``{"name", "arguments"}``, the
  arguments as the list of chunks they stream in; with ``"server_label"``, on responses, an
  ``mcp_call`` item the provider runs on that MCP server).

Usage::

    with MockUpstream() as upstream:
        httpx2.post(upstream.url + "/v1/chat/completions", json=...)
        assert upstream.requests[0].json["model"] == ...
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import h11
import trio
import trio.lowlevel

from gateway.upstream import echo

MODES = frozenset({"normal", "slow", "reset_midstream", "status", "malformed_sse", "hang",
                   "close_before_headers"})
SCENARIO_HEADER = "x-mock-scenario"
#: POSTs here (or below) are answered 200 and recorded: a webhook receiver for tests.
WEBHOOK_PATH = "/escalations"
MALFORMED_FRAME = b"data: {this is not json\n\n"
_RETRY_STATUSES = frozenset({429, 503, 529})


class ScenarioError(ValueError):
    """The `x-mock-scenario` header or `mock-…` model name is invalid. Caused by the test that
    sent it; the mock answers 400 with this message. Fix the scenario."""


@dataclass(frozen=True, slots=True)
class Scenario:
    mode: str = "normal"
    delay: float = 0.05
    after_frames: int = 2
    status: int = 500
    retry_after: str = "1"
    chunks: tuple[str, ...] | None = None
    text: str | None = None
    usage: Mapping[str, int] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    tool_calls: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_json(cls, raw: str) -> Scenario:
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise ScenarioError(f"{SCENARIO_HEADER} is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ScenarioError(f"{SCENARIO_HEADER} must be a JSON object")
        unknown = set(value) - set(cls.__dataclass_fields__)
        if unknown:
            raise ScenarioError(f"unknown scenario fields: {sorted(unknown)}")
        if "chunks" in value:
            value["chunks"] = tuple(value["chunks"])
        if "tool_calls" in value:
            value["tool_calls"] = tuple(value["tool_calls"])
        if "retry_after" in value:
            value["retry_after"] = str(value["retry_after"])
        scenario = cls(**value)
        if scenario.mode not in MODES:
            raise ScenarioError(f"unknown mode {scenario.mode!r}; one of {sorted(MODES)}")
        return scenario

    @classmethod
    def from_model(cls, model: str) -> Scenario | None:
        """`mock-slow`, `mock-reset-midstream`, `mock-status-429`, ...; None for other models."""
        if not model.startswith("mock-"):
            return None
        mode = model.removeprefix("mock-").replace("-", "_")
        if mode.startswith("status_"):
            code = mode.removeprefix("status_")
            if not code.isdigit():
                raise ScenarioError(f"bad status in model name {model!r}")
            return cls(mode="status", status=int(code))
        if mode not in MODES:
            raise ScenarioError(f"unknown mode in model name {model!r}")
        return cls(mode=mode)

    def reply_for(self, api: echo.Api, body: echo.JSON) -> echo.Reply:
        return echo.Reply.for_request(api, body, text=self.text, chunks=self.chunks,
                                      usage=self.usage, tool_calls=self.tool_calls)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    #: Lower-cased names; repeated headers joined with ", ".
    headers: dict[str, str]
    body: bytes
    #: The parsed body, or None when it is not JSON.
    json: Any


def _scenario_for(request: RecordedRequest) -> Scenario:
    raw = request.headers.get(SCENARIO_HEADER)
    if raw is not None:
        return Scenario.from_json(raw)
    model = request.json.get("model") if isinstance(request.json, dict) else None
    from_model = Scenario.from_model(model) if isinstance(model, str) else None
    return from_model or Scenario()


class _Exchange:
    """One request/response on a connection: did it end, and did we end the connection?"""

    def __init__(self, path: str):
        self.path = path
        self.over = False


class MockUpstream:
    """The server. `start()` runs it on its own thread and trio loop; safe to use from sync tests
    and from trio tests (`async with`)."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.port = 0
        self._lock = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._disconnects: list[str] = []
        self._errors: list[BaseException] = []
        self._connections = 0
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._crash: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> MockUpstream:
        """Start serving; returns once the socket listens."""
        if self._thread is not None:
            raise RuntimeError("MockUpstream already started")
        self._thread = threading.Thread(target=self._run, name="mock-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("MockUpstream did not start listening within 10 s")
        if self._crash is not None:
            raise RuntimeError("MockUpstream failed to start") from self._crash
        return self

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._token is not None and self._cancel is not None:
            try:
                trio.from_thread.run_sync(self._cancel.cancel, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        thread.join(10)

    def __enter__(self) -> MockUpstream:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> MockUpstream:
        return await trio.to_thread.run_sync(self.start)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await trio.to_thread.run_sync(self.stop)

    # -- what happened -----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def disconnects(self) -> list[str]:
        """Paths of requests whose client went away before the response was complete."""
        with self._lock:
            return list(self._disconnects)

    @property
    def connections(self) -> int:
        """TCP connections accepted so far (keep-alive reuses them)."""
        with self._lock:
            return self._connections

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected exceptions inside the mock itself; a test may assert this stays empty."""
        with self._lock:
            return list(self._errors)

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._disconnects.clear()
            self._errors.clear()
            self._connections = 0

    def wait_for_disconnect(self, timeout: float = 5.0, count: int = 1) -> bool:
        """Block until `count` disconnects were recorded; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._disconnects) >= count, timeout)

    def wait_for_requests(self, count: int = 1, timeout: float = 5.0) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: len(self._requests) >= count, timeout)

    async def await_disconnect(self, seconds: float = 5.0, count: int = 1) -> bool:
        """`wait_for_disconnect` for trio tests, without blocking their event loop."""
        return await trio.to_thread.run_sync(self.wait_for_disconnect, seconds, count)

    def _record(self, attribute: str, value: Any) -> None:
        with self._lock:
            getattr(self, attribute).append(value)
            self._lock.notify_all()

    # -- the server --------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._crash = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        listeners = await trio.open_tcp_listeners(0, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._cancel = nursery.cancel_scope
            await nursery.start(trio.serve_listeners, self._serve_connection, listeners)
            self._ready.set()

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        with self._lock:
            self._connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while (request := await self._read_request(stream, conn)) is not None:
                self._record("_requests", request)
                keep_alive = await self._respond(stream, conn, request)
                if not keep_alive or conn.our_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            pass
        except Exception as exc:
            self._record("_errors", exc)
        finally:
            await stream.aclose()

    async def _read_request(self, stream: trio.SocketStream, conn: h11.Connection
                            ) -> RecordedRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                return _recorded(head, bytes(body))
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    async def _respond(self, stream: trio.SocketStream, conn: h11.Connection,
                       request: RecordedRequest) -> bool:
        """Answer `request` while watching for the client going away. True to keep alive."""
        exchange = _Exchange(request.path)
        keep_alive = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_client, stream, conn, exchange, nursery.cancel_scope)
            try:
                keep_alive = await self._answer(stream, conn, request, exchange)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._client_left(exchange)
            finally:
                exchange.over = True
                nursery.cancel_scope.cancel()
        return keep_alive

    async def _watch_client(self, stream: trio.SocketStream, conn: h11.Connection,
                            exchange: _Exchange, scope: trio.CancelScope) -> None:
        # HTTP/1.1 clients send nothing while they wait, so any read result here is either a
        # pipelined request (kept for h11) or the client closing the connection.
        while True:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self._client_left(exchange)
                scope.cancel()
                return
            conn.receive_data(data)

    def _client_left(self, exchange: _Exchange) -> None:
        if not exchange.over:
            exchange.over = True
            self._record("_disconnects", exchange.path)

    async def _answer(self, stream: trio.SocketStream, conn: h11.Connection,
                      request: RecordedRequest, exchange: _Exchange) -> bool:
        async def send(*events: h11.Event) -> None:
            for event in events:
                data = conn.send(event)
                if data:
                    await stream.send_all(data)

        async def abort() -> None:
            exchange.over = True
            # Linger 0 makes close() send an RST instead of a FIN: a hard reset, as a crashed
            # provider or a middlebox would produce.
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream.aclose()

        if request.path == WEBHOOK_PATH or request.path.startswith(WEBHOOK_PATH + "/"):
            # A webhook receiver (escalation notices, event connectors): accepted, recorded.
            await send(*_json_events(200, {"received": True}))
            return True
        try:
            scenario = _scenario_for(request)
        except ScenarioError as exc:
            await send(*_json_events(400, {"error": {"message": str(exc)}}))
            return True
        mode = scenario.mode
        if mode == "hang":
            await trio.sleep_forever()
        if mode == "close_before_headers":
            exchange.over = True
            await stream.aclose()
            return False
        extra = list(scenario.headers.items())
        if mode == "status":
            api = echo.api_for_path(request.path)
            if scenario.status in _RETRY_STATUSES:
                extra.append(("retry-after", scenario.retry_after))
            body = echo.error_body(api, scenario.status)
            await send(*_json_events(scenario.status, body, extra))
            return True

        result = echo.answer(request.method, request.path, request.headers, request.body,
                             scenario.reply_for)
        headers = [*result.headers, *extra]
        if result.frames is None:
            if mode == "slow":
                await trio.sleep(scenario.delay)
            payload = result.body
            if mode == "malformed_sse":
                payload = payload[: len(payload) // 2]
            if mode == "reset_midstream":
                await send(_head(result.status, headers, len(payload)),
                           h11.Data(data=payload[: len(payload) // 2]))
                await abort()
                return False
            await send(*_json_events(result.status, payload, headers))
            return True

        await send(_head(result.status, headers))
        for index, frame in enumerate(result.frames):
            if index == scenario.after_frames:
                if mode == "reset_midstream":
                    await abort()
                    return False
                if mode == "malformed_sse":
                    await send(h11.Data(data=MALFORMED_FRAME))
                    break
            if mode == "slow":
                await trio.sleep(scenario.delay)
            await send(h11.Data(data=frame))
        await send(h11.EndOfMessage())
        return True


def _recorded(head: h11.Request, body: bytes) -> RecordedRequest:
    headers: dict[str, str] = {}
    for name, value in head.headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    return RecordedRequest(method=head.method.decode("ascii"),
                           path=head.target.decode("ascii"), headers=headers, body=body,
                           json=parsed)


def _head(status: int, headers: list[tuple[str, str]], length: int | None = None) -> h11.Response:
    out = [(k, v) for k, v in headers if k.lower() != "content-length"]
    if length is not None:
        out.append(("content-length", str(length)))
    return h11.Response(status_code=status, headers=out)


def _json_events(status: int, value: bytes | dict[str, Any],
                 headers: list[tuple[str, str]] | None = None) -> list[h11.Event]:
    body = value if isinstance(value, bytes) else json.dumps(value).encode()
    out = [(k, v) for k, v in headers or [] if k.lower() != "content-type"]
    out.append(("content-type", echo.JSON_TYPE))
    return [_head(status, out, len(body)), h11.Data(data=body), h11.EndOfMessage()]
