"""Per-request records, the `x-request-id`, and structured JSON logs (docs/operations.md).

`RequestRecord` is what the HTTP shell (`gateway.http.routes`) knows about one request plus what the
surfaces add as they go (project, decision, outcome, upstream time). The surfaces reach the
record of the request they serve through `current_record()`, a context variable: trio runs each
request in its own task, and a stream's frames are produced in that same task, so nothing has to
be threaded through the framework-neutral `Inbound`/`Outbound` values.

The record is turned into one access log line (logger `gateway.access`) and the request metrics
when the response is over. It holds ids, labels and timings only: never a header value other
than the request id, never a body, so prompt text cannot reach the logs by construction.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import re
import sys
import threading
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

REQUEST_ID_HEADER = "x-request-id"
#: What a client-chosen request id may look like: short, and safe in a header and a log line.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@~-]{1,128}")

access_log = logging.getLogger("gateway.access")

_current: ContextVar[RequestRecord | None] = ContextVar("gateway_request", default=None)


def request_id_from(client_value: str | None) -> str:
    """The client's `x-request-id` when it is sane, else a fresh random one."""
    if client_value and _SANE_REQUEST_ID.fullmatch(client_value):
        return client_value
    return os.urandom(16).hex()


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    method: str
    path: str
    #: `compat` (/v1), `policy` (/policy), `management`, `ops` (health, metrics) or `other`.
    surface: str
    #: `chat.completions`, `responses`, `messages`, `count_tokens`, `models`, `simulate`, ...
    api: str
    started: float
    #: The status of the answer: the HTTP status, or the status a stream ended with (a
    #: mid-stream failure ends a 200 stream with an error frame).
    status: int = 0
    stream: bool = False
    project_id: str | None = None
    #: The effective policy decision (policy surface), once one was made.
    decision: str | None = None
    outcome: str | None = None
    #: Seconds spent in the upstream exchange (headers and body or stream), when called.
    upstream_seconds: float | None = None
    #: Seconds from the request's arrival to the first body bytes of a stream.
    first_byte_seconds: float | None = None
    #: `USER_QUOTA_EXCEEDED` / `PROJECT_QUOTA_EXCEEDED` when a quota refused the request.
    quota_refusal: str | None = None
    #: The shutdown coordinator of the serving app (see `gateway.http.draining.Draining`).
    draining: Any = None

    def fields(self, duration: float) -> dict[str, Any]:
        """The access log line's fields (no text from the request besides its path)."""
        out: dict[str, Any] = {
            "request_id": self.request_id, "method": self.method, "path": self.path[:256],
            "surface": self.surface, "api": self.api, "status": self.status,
            "duration_ms": round(duration * 1000, 3),
        }
        if self.stream:
            out["stream"] = True
        for name in ("project_id", "decision", "outcome", "quota_refusal"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.upstream_seconds is not None:
            out["upstream_ms"] = round(self.upstream_seconds * 1000, 3)
            out["overhead_ms"] = round(max(duration - self.upstream_seconds, 0.0) * 1000, 3)
        if self.first_byte_seconds is not None:
            out["first_byte_ms"] = round(self.first_byte_seconds * 1000, 3)
        return out


def bind(record: RequestRecord) -> Any:
    """Make `record` the current request's; returns the token for `unbind`."""
    return _current.set(record)


def unbind(token: Any) -> None:
    _current.reset(token)


def current_record() -> RequestRecord | None:
    """The record of the request this task serves (None outside a request, e.g. in tests)."""
    return _current.get()


def log_request(record: RequestRecord, duration: float, *, level: int = logging.INFO) -> None:
    if not access_log.isEnabledFor(level):
        return
    if _lines is not None:  # serving: the line goes straight to the buffer (about 5 us)
        _lines.add(_access_line(record.fields(duration), level))
    else:
        access_log.log(level, "request", extra={"fields": record.fields(duration)})


# --- JSON logging -----------------------------------------------------------------------------

class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class LineBuffer:
    """Log lines kept in memory and written to a file descriptor by a thread, every `interval`
    seconds, in one write: a request only appends bytes, so a log line costs it neither a
    syscall nor a wake-up of another thread, and a slow log pipe never stalls the event loop.
    When the pipe is stuck and `max_lines` are waiting, new lines are counted in `dropped`
    instead of growing memory without bound."""

    def __init__(self, fd: int, *, interval: float = 0.1, max_lines: int = 100_000) -> None:
        self.fd = fd
        self.interval = interval
        self.max_lines = max_lines
        self.dropped = 0
        self._lines: collections.deque[bytes] = collections.deque()  # atomic append/popleft
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-log-writer",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, line: bytes) -> None:
        if len(self._lines) >= self.max_lines:
            self.dropped += 1
            return
        self._lines.append(line)

    def flush(self) -> None:
        chunk: list[bytes] = []
        try:
            while True:
                chunk.append(self._lines.popleft())
        except IndexError:
            pass
        data = memoryview(b"".join(chunk))
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:  # the log pipe is gone: nothing else to do with the lines
            pass

    def stop(self) -> None:
        """Write what is waiting and stop the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()


class _BufferHandler(logging.Handler):
    def __init__(self, lines: LineBuffer) -> None:
        super().__init__()
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.add(self.format(record).encode() + b"\n")
        except Exception:
            self.handleError(record)


_lines: LineBuffer | None = None
_PID = os.getpid()


def _access_line(fields: dict[str, Any], level: int) -> bytes:
    """What `JsonFormatter` would make of the access log record, without building one."""
    line = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": logging.getLevelName(level).lower(), "logger": access_log.name,
            "message": "request", "pid": _PID, **fields}
    return orjson.dumps(line, default=str) + b"\n"


@atexit.register  # writes what is still waiting when the process exits
def stop_log_thread() -> None:
    """Stop the thread that writes log lines, once everything waiting is written."""
    global _lines
    if _lines is not None:
        _lines.stop()
        _lines = None


def configure_logging(level: str | int = "INFO") -> None:
    """JSON lines on stderr for every logger of the process (gateway, hypercorn, libraries).
    Called by `python -m gateway serve` in each process that serves."""
    global _lines, _PID
    stop_log_thread()
    _PID = os.getpid()  # a worker process is forked or spawned after import
    _lines = LineBuffer(sys.stderr.fileno())
    _lines.start()
    handler = _BufferHandler(_lines)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # httpx2 logs every upstream call at INFO: the access log line already says all of it.
    for name in ("httpx2", "httpcore2"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    # hypercorn's own loggers must not add their plain-text handlers next to ours.
    for name in ("hypercorn.error", "hypercorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
