"""One adapter per wire API; each API's quirks live in its own module.

Each adapter declares the path of its endpoint below a surface prefix (`path`) and its metric
label (`api`); `ENDPOINTS` and `endpoint_for` are the one mapping from a request path to the API
that answers it, used for routing, error shapes and metric labels alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.adapters.base import Adapter
from gateway.adapters.chat import ChatCompletions
from gateway.adapters.messages import CountTokens, Messages
from gateway.adapters.responses import Responses

CHAT = ChatCompletions()
MESSAGES = Messages()
COUNT_TOKENS = CountTokens()
RESPONSES = Responses()

#: Surface prefixes, longest first: `/policy/v1/...` is the governed surface, like `/policy/...`.
SURFACE_PREFIXES: tuple[tuple[str, str], ...] = (
    ("/policy/v1", "policy"), ("/policy", "policy"), ("/v1", "compat"))


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An endpoint below a surface prefix, and the adapter whose shape its answers take."""

    path: str
    api: str
    adapter: Adapter


#: Most specific first: `/messages/count_tokens` before `/messages`.
ENDPOINTS: tuple[Endpoint, ...] = (
    *(Endpoint(a.path, a.api, a) for a in (CHAT, RESPONSES, COUNT_TOKENS, MESSAGES)),
    Endpoint("/models", "models", CHAT),
    Endpoint("/simulate", "simulate", CHAT),
)


def endpoint_for(path: str) -> tuple[str, Endpoint | None]:
    """(surface, endpoint) of a request path: the surface is `policy`, `compat` or `other`; the
    endpoint is the one whose path the request's equals or lies below (`/v1/messages/batches`
    belongs to messages, so its errors take the Anthropic shape), None when no endpoint does."""
    for prefix, surface in SURFACE_PREFIXES:
        if path.startswith(prefix + "/"):
            rest = path[len(prefix):]
            for endpoint in ENDPOINTS:
                if rest == endpoint.path or rest.startswith(endpoint.path + "/"):
                    return surface, endpoint
            return surface, None
    return "other", None


def adapter_for(path: str) -> Adapter:
    """The adapter whose error shape answers `path` (chat's OpenAI shape when none matches)."""
    _surface, endpoint = endpoint_for(path)
    return endpoint.adapter if endpoint is not None else CHAT


__all__ = ["CHAT", "COUNT_TOKENS", "ENDPOINTS", "MESSAGES", "RESPONSES", "Adapter", "Endpoint",
           "adapter_for", "endpoint_for"]
