"""The compat surface, `/v1/*` (docs/governed-surface.md): a transparent proxy for any valid key.

The body is validated (so the caller gets a clear 400 instead of an upstream's guess) but it is
forwarded as the exact bytes the client sent, unless it carries gateway fields: those are removed
(the upstream never sees a field it does not know) and the rest re-encoded. Nothing is injected
into the answer, ever. An inline `policy` is decided on the same path as `/policy`
(gateway/policy/decide.py), and only a refusal or an escalation changes the answer.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

import dsl
from gateway.adapters.base import JSON, Adapter, decode_json_object
from gateway.config import OPENAI
from gateway.errors import InvalidApiKey, ModerationBlocked, PolicyRefused, UpstreamUnavailable
from gateway.http.access_log import current_record
from gateway.http.wire import Inbound, Outbound
from gateway.identity.keys import Caller, credential_from_headers
from gateway.policy.decide import (
    apply_input_obligations,
    decide_input,
    moderation_blocked,
    request_facts,
)
from gateway.policy.governance import GATEWAY_BODY_FIELDS, encode_body
from gateway.state import GatewayState
from gateway.surfaces.models import with_routed_models
from gateway.upstream.exchange import Exchange, relayable_response_headers
from gateway.upstream.relay import PassThrough, StreamEnd, open_answer, read_answer, stream_answer


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
    forward = body
    if any(name in body for name in GATEWAY_BODY_FIELDS):
        forward = {k: v for k, v in body.items() if k not in GATEWAY_BODY_FIELDS}
    if "policy" in body or state.config.always_blocked_categories:
        # Compiled off the event loop, within the inline budget (gateway/policy/inline.py).
        inline = (await state.inline_policies.compile(body["policy"], surface="v1")
                  if body.get("policy") is not None else None)
        governed_body = await _govern_inline(state, adapter, forward, inline)
        if isinstance(governed_body, Outbound):
            return governed_body
        forward = governed_body
    if forward is not body:
        content = encode_body(forward)
    provider = state.config.provider_for(adapter.provider_kind, body.get("model"))
    request = state.upstreams.build_request(
        provider, "POST", adapter.upstream_path + _query_suffix(inbound), inbound.headers, content
    )
    return await relay(adapter, Exchange(state.upstreams.client_for(provider), request,
                                         state.config.timeouts))


async def _govern_inline(state: GatewayState, adapter: Adapter, forward: JSON,
                         inline: dsl.CompiledPolicy | None) -> JSON | Outbound:
    """Always-blocked categories, and an inline `policy` evaluated and enforced for this one
    request. Nothing is added to the answer unless it is refused. `forward` is the body without
    the gateway's fields. The categories come from the configured classifier; when an external
    one fails, the inline policy's `on_error` decides, and without one the built-in
    classification stands."""
    facts = request_facts(adapter, forward)
    policies = [inline] if inline is not None else []
    moderation = None
    if inline is None and state.moderator.client is None:
        classification: Any = dsl.classify(facts.input_text, pii=False)
    else:
        moderation = await state.moderator.classify_request(policies, facts, forward)
        classification = moderation.classification
    blocked = moderation_blocked(state.config.always_blocked_categories, classification, facts)
    if blocked:
        raise ModerationBlocked(f"The request was blocked for category '{blocked[0]}'.")
    if inline is None:
        return forward
    decision = decide_input(policies, facts, classification)
    if moderation is not None:
        decision = moderation.applied(decision, policies)
    obligations = decision.obligations
    if decision.decision == "refuse":
        raise PolicyRefused(obligations.message or "The request was refused by policy.")
    if decision.decision == "escalate":
        return Outbound.json(200, adapter.holding_reply(
            forward, obligations.message or "A specialist will follow up with you."))
    return apply_input_obligations(adapter, forward, decision)


async def proxy_models(state: GatewayState, inbound: Inbound, *,
                       authenticated: bool = False) -> Outbound:
    if not authenticated:
        authenticate(state, inbound)
    provider = state.config.provider_for(OPENAI, None)
    request = state.upstreams.build_request(provider, "GET", "/models" + _query_suffix(inbound),
                                            inbound.headers)
    exchange = Exchange(state.upstreams.client_for(provider), request, state.config.timeouts)
    listed = await relay(None, exchange)
    return await with_routed_models(state, inbound, listed)  # gateway/surfaces/models.py


def _query_suffix(inbound: Inbound) -> str:
    """The client's query string, kept as sent (some deployments carry `api-version` there)."""
    return "?" + inbound.query_string.decode("latin-1") if inbound.query_string else ""


async def relay(adapter: Adapter | None, exchange: Exchange) -> Outbound:
    """Run the exchange and turn its answer into ours: whole bodies checked, streams relayed
    frame by frame, untouched. Upstream error statuses pass through untouched."""
    upstream_started = time.perf_counter()
    record = current_record()
    response = await open_answer(exchange)
    headers = relayable_response_headers(response.headers)
    if adapter is not None and exchange.is_event_stream:
        async def stream_done(end: StreamEnd) -> None:
            if record is not None:
                record.upstream_seconds = time.perf_counter() - upstream_started
                if end.outcome not in ("completed", "client_disconnected"):
                    record.status, record.outcome = end.status, end.outcome

        return Outbound(status=response.status_code, headers=headers,
                        stream=stream_answer(exchange, adapter, PassThrough(), stream_done))
    try:
        body = await read_answer(exchange)
    finally:
        if record is not None:
            record.upstream_seconds = time.perf_counter() - upstream_started
    if response.is_success and "json" in response.headers.get("content-type", ""):
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamUnavailable("The upstream sent a malformed JSON response.") from None
    return Outbound(status=response.status_code, headers=headers, body=body)
