"""The event seam of the governed surface (SPEC §9): the request hands an event over and returns.

`EventSink.emit` never blocks and never fails the request. The durable SQLite writer with
connectors comes with the events issue; until then `MemorySink` keeps the newest events in a
bounded buffer (and counts what it had to drop), which is what tests and simulate read.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

SOURCE = "policy_gateway"


class EventSink(Protocol):
    def emit(self, event: Mapping[str, Any]) -> None:
        """Accept an event without waiting; never raises."""


class MemorySink:
    def __init__(self, capacity: int = 10_000) -> None:
        self.events: deque[dict[str, Any]] = deque(maxlen=capacity)
        self.dropped = 0

    def emit(self, event: Mapping[str, Any]) -> None:
        if len(self.events) == self.events.maxlen:
            self.dropped += 1
        self.events.append(dict(event))


def base_event(event_type: str, **fields: Any) -> dict[str, Any]:
    """The fields every event carries (SPEC §9.2), plus `fields`."""
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "source": SOURCE,
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        **fields,
    }
