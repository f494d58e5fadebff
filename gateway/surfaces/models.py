"""`GET /v1/models` (and `/policy/models`): the models this gateway answers for.

The default OpenAI-kind provider's own list is passed through as it is (the echo's, when it has
no API key). Added to it: every model a `[[routes]]` entry names exactly, and, for each other
provider with an API key that routes glob patterns (`llama-*`), the models of its own list that
those patterns route to it. So a client's model picker shows what it can call here. A secondary
provider that fails to list is left out (and logged); only the default provider's failure is
the answer's.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from gateway.config import ANTHROPIC, OPENAI, Provider, Route
from gateway.errors import GatewayError
from gateway.http.wire import Inbound, Outbound
from gateway.upstream.exchange import Exchange

log = logging.getLogger("gateway.surfaces.models")


async def with_routed_models(state: Any, inbound: Inbound, listed: Outbound) -> Outbound:
    """`listed` (the default provider's answer) with the routed models added."""
    if listed.status != 200 or listed.stream is not None:
        return listed
    try:
        document = orjson.loads(listed.body)
    except orjson.JSONDecodeError:
        return listed
    entries = document.get("data") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        return listed
    anthropic_shape = "anthropic-version" in inbound.headers
    known = {entry.get("id") for entry in entries if isinstance(entry, dict)}
    kind = ANTHROPIC if anthropic_shape else OPENAI
    for model, provider in await _routed_models(state, inbound, kind):
        if model not in known:
            known.add(model)
            entries.append(_entry(model, provider, anthropic_shape))
    if anthropic_shape and entries:
        document["last_id"] = entries[-1].get("id")
    headers = [(k, v) for k, v in listed.headers if k.lower() != "content-type"]
    return Outbound.json(200, document, headers)


async def _routed_models(state: Any, inbound: Inbound, kind: str) -> list[tuple[str, str]]:
    """(model, provider) of every route to a provider of `kind` (the API the list is for)."""
    config = state.config
    default = config.provider_for(OPENAI, None)
    found: list[tuple[str, str]] = []
    globbed: dict[str, list[Route]] = {}
    for route in config.routes:
        provider = config.providers[route.provider]
        if provider.kind != kind:
            continue
        if not _is_glob(route.model):
            found.append((route.model, provider.name))
        elif provider.kind == OPENAI and not provider.is_echo and provider is not default:
            globbed.setdefault(provider.name, []).append(route)
    for name, routes in globbed.items():
        for model in await _provider_models(state, config.providers[name], inbound):
            if any(route.matches(model) for route in routes) and \
                    config.provider_for(OPENAI, model).name == name:
                found.append((model, name))
    return found


async def _provider_models(state: Any, provider: Provider, inbound: Inbound) -> list[str]:
    request = state.upstreams.build_request(provider, "GET", "/models", inbound.headers)
    exchange = Exchange(state.upstreams.client_for(provider), request, state.config.timeouts)
    try:
        response = await exchange.start()
        body = await exchange.read_body()
    except GatewayError as exc:
        log.warning("provider %s did not list its models: %s", provider.name, exc)
        return []
    finally:
        await exchange.aclose()
    try:
        entries = orjson.loads(body)["data"] if response.status_code == 200 else None
    except (orjson.JSONDecodeError, KeyError, TypeError):
        entries = None
    if not isinstance(entries, list):
        log.warning("provider %s answered its model list with status %d and no list",
                    provider.name, response.status_code)
        return []
    return [entry["id"] for entry in entries
            if isinstance(entry, dict) and isinstance(entry.get("id"), str)]


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _entry(model: str, provider: str, anthropic_shape: bool) -> dict[str, Any]:
    if anthropic_shape:
        return {"type": "model", "id": model, "display_name": model,
                "created_at": "1970-01-01T00:00:00Z"}
    return {"id": model, "object": "model", "created": 0, "owned_by": provider}
