"""The compat surface, `/v1/*` (SPEC §1): a transparent proxy for any valid key.

The body is validated (so the caller gets a clear 400 instead of an upstream's guess) but it is
forwarded as the exact bytes the client sent. Nothing is injected into the answer, ever.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from gateway.adapters.base import Adapter, decode_json_object
from gateway.config import OPENAI
from gateway.errors import InvalidApiKey, UpstreamError, UpstreamUnavailable
from gateway.identity import Caller, credential_from_headers
from gateway.state import GatewayState
from gateway.upstream import Exchange, relayable_response_headers
from gateway.wire import Inbound, Outbound, OwnedStream


def authenticate(state: GatewayState, inbound: Inbound) -> Caller:
    credential = credential_from_headers(inbound.headers)
    if credential is None:
        raise InvalidApiKey(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' or in the "
            "'x-api-key' header."
        )
    return state.identities.authenticate_key(credential)


async def proxy_api(state: GatewayState, adapter: Adapter, inbound: Inbound) -> Outbound:
    """POST one of the three APIs (or count_tokens) through to its provider."""
    authenticate(state, inbound)
    body = decode_json_object(inbound.body)
    adapter.validate(body)
    provider = state.config.provider_for(adapter.provider_kind, body.get("model"))
    request = state.upstreams.build_request(
        provider, "POST", adapter.upstream_path, inbound.headers, inbound.body
    )
    return await relay(state, adapter, Exchange(state.upstreams.client_for(provider), request,
                                                 state.config.timeouts))


async def proxy_models(state: GatewayState, inbound: Inbound) -> Outbound:
    authenticate(state, inbound)
    provider = state.config.provider_for(OPENAI, None)
    path = "/models" + (("?" + inbound.query_string.decode("latin-1")) if inbound.query_string
                        else "")
    request = state.upstreams.build_request(provider, "GET", path, inbound.headers)
    exchange = Exchange(state.upstreams.client_for(provider), request, state.config.timeouts)
    return await relay(state, None, exchange)


async def relay(state: GatewayState, adapter: Adapter | None, exchange: Exchange) -> Outbound:
    """Run the exchange and turn its answer into ours: whole bodies checked, streams relayed
    frame by frame. Upstream error statuses pass through untouched."""
    owned: Exchange | None = exchange
    try:
        response = await exchange.start()
        headers = relayable_response_headers(response.headers)
        if adapter is not None and exchange.is_event_stream:
            stream = OwnedStream(_relay_frames(adapter, exchange), exchange.aclose)
            owned = None  # the stream closes it now
            return Outbound(status=response.status_code, headers=headers, stream=stream)
        body = await exchange.read_body()
    finally:
        if owned is not None:
            await owned.aclose()
    if response.is_success and "json" in response.headers.get("content-type", ""):
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamUnavailable("The upstream sent a malformed JSON response.") from None
    return Outbound(status=response.status_code, headers=headers, body=body)


async def _relay_frames(adapter: Adapter, exchange: Exchange) -> AsyncIterator[bytes]:
    try:
        async for batch in exchange.frames(adapter):
            yield b"".join(frame.raw for frame, _payload in batch)
    except UpstreamError as error:
        yield adapter.stream_error_frame(error)
