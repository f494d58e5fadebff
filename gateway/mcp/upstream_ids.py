"""The ids the governed MCP route sends requests upstream under, and the way back from a
client's id to the gateway's, for the client's `notifications/cancelled`.

A governed request never goes upstream under the client's id (gateway/mcp/answers.py), so a
client that cancels its request names an id the server never saw. The gateway remembers, per
worker, the id it chose for each recent request of a caller's session and puts it in the
notification instead. A cancellation that reaches another worker, or names a request too old to
be remembered, goes as the client sent it: the server ignores an id it does not know.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

#: Requests remembered per worker, the most recent ones: far more than are ever in flight.
REMEMBERED = 4096


def upstream_request_id() -> str:
    """An id of the gateway's: no client chose it, and no server can misread it (a JavaScript
    server reads a large integer id as a double and answers with another number)."""
    return f"gateway-{secrets.token_hex(12)}"


class UpstreamIds:
    def __init__(self, remembered: int = REMEMBERED) -> None:
        self._ids: OrderedDict[tuple[Hashable, Any], str] = OrderedDict()
        self._remembered = remembered

    def new(self, owner: Hashable, client_id: Any) -> str:
        """A new upstream id for request `client_id` of `owner` (the caller and its session:
        another caller can never cancel it)."""
        upstream = upstream_request_id()
        key = (owner, client_id)
        self._ids.pop(key, None)
        self._ids[key] = upstream
        while len(self._ids) > self._remembered:
            self._ids.popitem(last=False)
        return upstream

    def cancellation(self, owner: Hashable, message: dict[str, Any]) -> dict[str, Any]:
        """A client's `notifications/cancelled` naming the upstream id of its request."""
        params = message.get("params")
        if not isinstance(params, dict):
            return message
        upstream = self._ids.get((owner, params.get("requestId")))
        if upstream is None:
            return message
        return {**message, "params": {**params, "requestId": upstream}}
