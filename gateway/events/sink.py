"""The event seam of the governed surface (docs/events.md): the request hands an event over and
returns.

`EventSink.emit` never blocks and never fails the request. `QueueSink` puts the event on a
bounded trio memory channel that the durable writer (`gateway.events.store.EventWriter`) empties
into SQLite; when the channel is full (storage down or too slow) the event is dropped, counted
and logged, and the request goes on. `MemorySink` keeps the newest events in a bounded buffer,
which is what tests read (`QueueSink` keeps one too, as `events`).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import trio

SOURCE = "policy_gateway"
log = logging.getLogger("gateway.events.sink")

#: The fields of each event class (docs/events.md): every event of a class carries each of them
#: (null when it does not apply, e.g. `user_id` of a revision loaded from the policies directory).
COMMON_FIELDS = ("event_id", "event_type", "source", "created_at", "user_id", "org_id",
                 "policy_id", "policy_name", "policy_revision", "data_classification")
DECISION_FIELDS = ("decision", "effective_decision", "enforced", "rollout_mode", "reason_code",
                   "triggered_categories", "allowlist_hits", "denylist_hits", "redacted_spans",
                   "policy_target", "policy_user", "quota_subject", "project_id",
                   "project_label", "model", "surface", "stream", "status", "usage",
                   "latency_ms", "overhead_ms", "outcome")
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "enforcement": COMMON_FIELDS + DECISION_FIELDS,
    "simulation": COMMON_FIELDS + DECISION_FIELDS + ("scenario_categories",),
    "revision": (*COMMON_FIELDS, "edit_type", "config_snapshot"),
}


class EventSink(Protocol):
    def emit(self, event: Mapping[str, Any]) -> None:
        """Accept an event without waiting; never raises."""


class MemorySink:
    def __init__(self, capacity: int = 10_000) -> None:
        self.events: deque[dict[str, Any]] = deque(maxlen=capacity)
        self.dropped = 0

    def emit(self, event: Mapping[str, Any]) -> None:
        self.keep(dict(event))

    def keep(self, event: dict[str, Any]) -> None:
        """Keep `event` itself (a copy the caller will not change)."""
        if len(self.events) == self.events.maxlen:
            self.dropped += 1
        self.events.append(event)


class RateLimitedLog:
    """Logs at most one line per `interval` seconds, with the count of what it held back, so a
    storm of drops cannot itself flood the logs."""

    def __init__(self, interval: float = 5.0, clock: Any = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._next = 0.0
        self._held_back = 0

    def warning(self, message: str, *args: Any) -> bool:
        now = self._clock()
        if now < self._next:
            self._held_back += 1
            return False
        held, self._held_back, self._next = self._held_back, 0, now + self.interval
        suffix = f" ({held} similar messages held back)" if held else ""
        log.warning(message + suffix, *args)
        return True


class QueueSink:
    """The request side of the durable pipeline: `emit` is `send_nowait` on a bounded channel.

    `dropped` counts events refused because the channel was full or already closed (shutdown);
    `recent` keeps the newest events in memory for tests and diagnostics (capacity 0: none).
    """

    def __init__(self, capacity: int = 10_000, *, recent: int = 1_000) -> None:
        self.capacity = capacity
        self.send, self.receive = trio.open_memory_channel[dict[str, Any]](capacity)
        self.recent = MemorySink(recent) if recent > 0 else None
        self.accepted = 0
        self.dropped = 0
        self._drop_log = RateLimitedLog()
        #: Set once `_wanted` more events were accepted (see `wait_for_more`).
        self._more: trio.Event | None = None
        self._wanted = 0
        self._closed = False

    @property
    def events(self) -> deque[dict[str, Any]]:
        return self.recent.events if self.recent is not None else deque(maxlen=0)

    @property
    def depth(self) -> int:
        """Events accepted and not yet taken by the writer."""
        return self.send.statistics().current_buffer_used

    def emit(self, event: Mapping[str, Any]) -> None:
        item = dict(event)
        try:
            self.send.send_nowait(item)
        except trio.WouldBlock:
            self._drop(item, "the event queue is full (storage down or too slow)")
            return
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._drop(item, "the event queue is closed (the gateway is shutting down)")
            return
        self.accepted += 1
        if self.recent is not None:  # the same copy: neither side changes an event
            self.recent.keep(item)
        if self._more is not None:
            self._wanted -= 1
            if self._wanted <= 0:
                self._more.set()

    async def wait_for_more(self, count: int) -> None:
        """Until `count` more events were accepted, or the sink closed. The writer gathers a
        batch in the channel this way instead of waking up for every event."""
        self._more, self._wanted = trio.Event(), count
        try:
            if count > 0 and not self._closed:
                await self._more.wait()
        finally:
            self._more = None

    def close(self) -> None:
        """No more events: the writer drains what the channel holds and stops."""
        self.send.close()
        self._closed = True
        if self._more is not None:
            self._more.set()

    def _drop(self, event: dict[str, Any], why: str) -> None:
        self.dropped += 1
        self._drop_log.warning("policy event %s (%s) dropped: %s; %d dropped so far",
                               event.get("event_id"), event.get("event_type"), why,
                               self.dropped)


def base_event(event_type: str, **fields: Any) -> dict[str, Any]:
    """The fields every event carries (docs/events.md), plus `fields`."""
    return {
        "event_id": new_event_id(),
        "event_type": event_type,
        "source": SOURCE,
        "created_at": _created_at(),
        **fields,
    }


def new_event_id() -> str:
    """A random (version 4) UUID as text: what `str(uuid.uuid4())` gives, at a quarter of its
    cost (one event per request)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_second_text: tuple[int, str] = (-1, "")


def _created_at() -> str:
    """Now in UTC to the millisecond with a `Z` (RFC 3339), as `datetime.isoformat` writes it;
    the part up to the seconds is formatted once a second."""
    global _second_text
    now = time.time()
    second = int(now)
    if _second_text[0] != second:
        _second_text = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second_text[1]}.{int((now - second) * 1000):03d}Z"
