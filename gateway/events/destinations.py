"""Where connectors deliver events: a JSON-lines file that rotates by size, and a webhook that
gets one POST per event. Retries and backoff are the connector task's (gateway/events/connectors.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx2
import orjson

from gateway.errors import WebhookError
from gateway.events.connector_settings import ConnectorSettings


class JsonLinesFile:
    """Appends one JSON event per line; when the file would pass `max_bytes` it becomes
    `<path>.1` (older ones shift to `.2` … `.<backups>`, the oldest is removed)."""

    def __init__(self, settings: ConnectorSettings) -> None:
        self.path = Path(settings.path)
        self.max_bytes = settings.max_bytes
        self.backups = settings.backups

    def write(self, events: Sequence[Mapping[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        size = self.path.stat().st_size if self.path.exists() else 0
        chunk: list[bytes] = []
        for event in events:
            line = orjson.dumps(event) + b"\n"
            if size and size + len(line) > self.max_bytes:  # a longer line gets a file alone
                self._append(chunk)
                chunk, size = [], 0
                self._rotate()
            chunk.append(line)
            size += len(line)
        self._append(chunk)

    def _append(self, lines: list[bytes]) -> None:
        if not lines:
            return
        with open(self.path, "ab") as file:
            file.write(b"".join(lines))
            file.flush()
            os.fsync(file.fileno())  # progress is recorded next: the lines must be on disk

    def _rotate(self) -> None:
        if self.backups < 1:
            self.path.unlink(missing_ok=True)
            return
        for index in range(self.backups, 0, -1):
            older = Path(f"{self.path}.{index}")
            newer = Path(f"{self.path}.{index - 1}") if index > 1 else self.path
            if newer.exists():
                os.replace(newer, older)




class Webhook:
    """One POST per event, JSON body, custom headers; 2xx is delivered, anything else retried."""

    def __init__(self, settings: ConnectorSettings, client: httpx2.AsyncClient) -> None:
        self.settings = settings
        self.client = client

    async def post(self, event: Mapping[str, Any]) -> None:
        try:
            response = await self.client.post(
                self.settings.url, content=orjson.dumps(event), timeout=self.settings.timeout,
                headers={"content-type": "application/json",
                         "idempotency-key": str(event["event_id"]), **self.settings.headers})
        except httpx2.HTTPError as exc:
            raise WebhookError(f"{type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            raise WebhookError(f"answered {response.status_code}")
