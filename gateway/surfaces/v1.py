"""The compat surface, `/v1/*` (SPEC §1): a transparent proxy for any valid key.

The body is validated (so the caller gets a clear 400 instead of an upstream's guess) but it is
forwarded as the exact bytes the client sent. Nothing is injected into the answer, ever.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing

import orjson

import dsl
from gateway.adapters.base import JSON, Adapter, decode_json_object
from gateway.config import OPENAI
from gateway.errors import (
    InvalidApiKey,
    ModerationBlocked,
    PolicyRefused,
    UpstreamError,
    UpstreamUnavailable,
)
from gateway.http.access_log import current_record
from gateway.http.draining import ShuttingDown, cut_at_grace_end, until_cut
from gateway.http.wire import Inbound, Outbound, OwnedStream
from gateway.identity.keys import Caller, credential_from_headers
from gateway.policy.governance import encode_body
from gateway.state import GatewayState
from gateway.upstream.exchange import Exchange, relayable_response_headers


def authenticate(state: GatewayState, inbound: Inbound) -> Caller:
    credential = credential_from_headers(inbound.headers)
    if credential is None:
        raise InvalidApiKey(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' or in the "
            "'x-api-key' header."
        )
    return state.authenticate(credential)


async def proxy_api(state: GatewayState, adapter: Adapter, inbound: Inbound, *,
                    authenticated: bool = False) -> Outbound:
    """POST one of the three APIs (or count_tokens) through to its provider."""
    if not authenticated:
        authenticate(state, inbound)
    body = decode_json_object(inbound.body)
    adapter.validate(body)
    content = inbound.body
    if "policy" in body or state.config.always_blocked_categories:
        # Compiled off the event loop, within the inline budget (gateway/policy/inline.py).
        inline = (await state.inline_policies.compile(body["policy"], surface="v1")
                  if body.get("policy") is not None else None)
        governed_body = _govern_inline(state, adapter, body, inline)
        if isinstance(governed_body, Outbound):
            return governed_body
        if governed_body is not body:
            content = encode_body(governed_body)
    provider = state.config.provider_for(adapter.provider_kind, body.get("model"))
    request = state.upstreams.build_request(
        provider, "POST", adapter.upstream_path + _query_suffix(inbound), inbound.headers, content
    )
    return await relay(state, adapter, Exchange(state.upstreams.client_for(provider), request,
                                                 state.config.timeouts))


def _govern_inline(state: GatewayState, adapter: Adapter, body: JSON,
                   inline: dsl.CompiledPolicy | None) -> JSON | Outbound:
    """Always-blocked categories, and an inline `policy` evaluated and enforced for this one
    request (SPEC §5.5, §5.10). Nothing is added to the answer unless it is refused."""
    # `"policy": null` means no inline policy, as on /policy/* (the field is still stripped).
    view = adapter.input_view(body)
    classification = dsl.classify(view.input_text, pii=inline is not None)
    blocked = [c for c in classification.triggered()
               if c in state.config.always_blocked_categories]
    if blocked:
        raise ModerationBlocked(f"The request was blocked for category '{blocked[0]}'.")
    forward = {k: v for k, v in body.items() if k != "policy"} if "policy" in body else body
    if inline is None:
        return forward
    facts = dsl.RequestFacts(
        surface=adapter.surface, model=str(body.get("model", "")),
        message_count=view.message_count, estimated_input_tokens=view.estimated_input_tokens,
        max_output_tokens=view.max_output_tokens, has_tools=view.has_tools,
        stream=adapter.is_stream(body), input_text=view.input_text,
        last_user_text=view.last_user_text, system_text=view.system_text)
    decision = inline.evaluate_input(facts, classification)
    obligations = decision.obligations
    if decision.decision == "refuse":
        raise PolicyRefused(obligations.message or "The request was refused by policy.")
    if decision.decision == "escalate":
        return Outbound.json(200, adapter.holding_reply(
            forward, obligations.message or "A specialist will follow up with you."))
    if obligations.redactor is not None:
        redactor = obligations.redactor
        forward = adapter.map_input_texts(forward, lambda text: redactor.apply(text)[0])
    if decision.decision in ("rewrite", "summary") and obligations.instruction:
        forward = adapter.with_instruction(forward, obligations.instruction)
    return forward


async def proxy_models(state: GatewayState, inbound: Inbound, *,
                       authenticated: bool = False) -> Outbound:
    if not authenticated:
        authenticate(state, inbound)
    provider = state.config.provider_for(OPENAI, None)
    request = state.upstreams.build_request(provider, "GET", "/models" + _query_suffix(inbound),
                                            inbound.headers)
    exchange = Exchange(state.upstreams.client_for(provider), request, state.config.timeouts)
    return await relay(state, None, exchange)


def _query_suffix(inbound: Inbound) -> str:
    """The client's query string, kept as sent (some deployments carry `api-version` there)."""
    return "?" + inbound.query_string.decode("latin-1") if inbound.query_string else ""


async def relay(state: GatewayState, adapter: Adapter | None, exchange: Exchange) -> Outbound:
    """Run the exchange and turn its answer into ours: whole bodies checked, streams relayed
    frame by frame. Upstream error statuses pass through untouched."""
    owned: Exchange | None = exchange
    upstream_started = time.perf_counter()
    try:
        with cut_at_grace_end():
            response = await exchange.start()
        headers = relayable_response_headers(response.headers)
        if adapter is not None and exchange.is_event_stream:
            stream = OwnedStream(_relay_frames(adapter, exchange, upstream_started),
                                 exchange.aclose)
            owned = None  # the stream closes it now
            return Outbound(status=response.status_code, headers=headers, stream=stream)
        with cut_at_grace_end():
            body = await exchange.read_body()
    finally:
        if owned is not None:
            await owned.aclose()
            record = current_record()
            if record is not None:
                record.upstream_seconds = time.perf_counter() - upstream_started
    if response.is_success and "json" in response.headers.get("content-type", ""):
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamUnavailable("The upstream sent a malformed JSON response.") from None
    return Outbound(status=response.status_code, headers=headers, body=body)


async def _relay_frames(adapter: Adapter, exchange: Exchange, upstream_started: float
                        ) -> AsyncIterator[bytes]:
    record = current_record()
    try:
        async with aclosing(until_cut(exchange.frames(adapter))) as batches:
            async for batch in batches:
                yield b"".join(frame.raw for frame, _payload in batch)
    except (UpstreamError, ShuttingDown) as error:
        if record is not None:
            record.status = error.status
            record.outcome = "shutdown" if isinstance(error, ShuttingDown) else "upstream_error"
        yield adapter.stream_error_frame(error)
    finally:
        if record is not None:
            record.upstream_seconds = time.perf_counter() - upstream_started
