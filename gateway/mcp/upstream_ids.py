"""The ids the governed MCP route sends requests upstream under, and the way back from a
client's id to the gateway's, for the client's `notifications/cancelled`.

A governed request never goes upstream under the client's id (gateway/mcp/answers.py), so a
client that cancels its request names an id the server never saw. The gateway remembers, per
worker, the id it chose for each recent request of a caller's session and puts it in the
notification instead. A cancellation that reaches another worker, or names a request too old to
be remembered, goes as the client sent it: the server ignores an id it does not know.

The map holds a fixed-size digest of each client id, never the id itself (a client chooses an
id of any length), and each caller keeps only its own most recent requests: a busy caller
forgets its own old requests before it pushes out anyone else's.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

import orjson

from gateway.errors import McpInvalidParams

#: Requests remembered per worker, the most recent ones: far more than are ever in flight.
REMEMBERED = 4096
#: Requests remembered per caller (all its sessions on one server), the most recent ones.
REMEMBERED_PER_CALLER = 256


def upstream_request_id() -> str:
    """An id of the gateway's: no client chose it, and no server can misread it (a JavaScript
    server reads a large integer id as a double and answers with another number)."""
    return f"gateway-{secrets.token_hex(12)}"


def _digest(session: str | None, client_id: str | int) -> bytes:
    """A fixed-size key for a client's id in one of its sessions. The JSON text keeps `1` and
    `"1"` apart, as JSON-RPC does."""
    return hashlib.blake2b(orjson.dumps([session, client_id]), digest_size=16).digest()


class UpstreamIds:
    def __init__(self, remembered: int = REMEMBERED,
                 per_caller: int = REMEMBERED_PER_CALLER) -> None:
        # Every caller's entries, oldest first, and the order of all entries across callers.
        self._by_caller: dict[Hashable, OrderedDict[bytes, str]] = {}
        self._all: OrderedDict[tuple[Hashable, bytes], None] = OrderedDict()
        self._remembered, self._per_caller = remembered, per_caller

    def __len__(self) -> int:
        return len(self._all)

    def new(self, caller: Hashable, session: str | None, client_id: str | int) -> str:
        """A new upstream id for request `client_id` of `caller` in `session` (another caller,
        or another session, can never cancel it)."""
        upstream = upstream_request_id()
        key = _digest(session, client_id)
        own = self._by_caller.setdefault(caller, OrderedDict())
        own.pop(key, None)
        own[key] = upstream
        self._all.pop((caller, key), None)
        self._all[(caller, key)] = None
        if len(own) > self._per_caller:
            oldest, _ = own.popitem(last=False)
            del self._all[(caller, oldest)]
        while len(self._all) > self._remembered:
            (owner, oldest), _ = self._all.popitem(last=False)
            entries = self._by_caller[owner]
            del entries[oldest]
            if not entries:
                del self._by_caller[owner]
        return upstream

    def cancellation(self, caller: Hashable, session: str | None, message: dict[str, Any]
                     ) -> dict[str, Any]:
        """A client's `notifications/cancelled` naming the upstream id of its request. A
        `requestId` that no request can have is the client's error (the params are invalid)."""
        params = message.get("params")
        if not isinstance(params, dict) or "requestId" not in params:
            return message
        client_id = params["requestId"]
        if isinstance(client_id, bool) or not isinstance(client_id, str | int):
            raise McpInvalidParams("Invalid params: 'requestId' must be a string or an integer.")
        own = self._by_caller.get(caller)
        upstream = None if own is None else own.get(_digest(session, client_id))
        if upstream is None:
            return message
        return {**message, "params": {**params, "requestId": upstream}}
