"""Acting on a governed request's input decision (SPEC §4, §5.4, §7): the second half of the
`/policy/*` lifecycle, after `gateway.surfaces.policy.PolicySurface` decided.

Refuse or escalate without the upstream, or forward with redactions and instructions; check the
whole response or govern the stream frame by frame; settle the quota reservation; and record the
request's single event, whatever happened (client gone, upstream failure, shutdown).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

import orjson
import trio

import dsl
from dsl.decision import CATEGORY_SURFACES
from gateway.adapters.base import Adapter
from gateway.errors import (
    GatewayError,
    ModerationBlocked,
    PolicyRefused,
    UpstreamError,
    UpstreamUnavailable,
)
from gateway.events.sink import base_event
from gateway.http.access_log import current_record
from gateway.http.draining import ShuttingDown, cut_at_grace_end, until_cut
from gateway.http.wire import Outbound, OwnedStream
from gateway.policy.governance import Governance, combine, encode_body
from gateway.policy.stream import DEFAULT_REFUSAL, StreamGovernor, WholeBlockMonitor
from gateway.quota.limits import Reservation
from gateway.state import GatewayState
from gateway.upstream.exchange import Exchange, relayable_response_headers

log = logging.getLogger("gateway.policy")
DEFAULT_HOLDING_REPLY = ("Thanks for your message. A specialist will review it and follow up "
                         "with you.")


class GovernedRun:
    """One governed request after its input decision: acting on it, and its single event."""

    def __init__(self, state: GatewayState, adapter: Adapter, gov: Governance,
                 reservation: Reservation, started: float, headers: Mapping[str, str], *,
                 encoded: bytes) -> None:
        self.encoded = encoded
        self.state = state
        self.headers = headers
        self.adapter = adapter
        self.gov = gov
        self.reservation = reservation
        self.started = started
        self.upstream_seconds = 0.0
        self.input_tokens = 0
        self.output_tokens = 0
        self.estimated_input_tokens = 0  # set from the request's facts in `act`
        self.recorded = False

    async def act(self, forward: dict[str, Any], facts: dsl.RequestFacts,
                  classification: Any, policies: list[dsl.CompiledPolicy]) -> Outbound:
        self.estimated_input_tokens = facts.estimated_input_tokens
        try:
            return await self._act(forward, facts, classification, policies)
        except GatewayError as error:
            await self._finish(error.status, _outcome_of(error), release=True)
            for name, value in self.reservation.headers:
                error.headers.setdefault(name, value)
            error.extra.setdefault("policy", self.gov.policy_object())
            raise
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await self._finish(499, "client_disconnected", release=True)
            raise
        except Exception:
            await self._finish(500, "internal_error", release=True)
            raise

    async def _act(self, forward: dict[str, Any], facts: dsl.RequestFacts, classification: Any,
                   policies: list[dsl.CompiledPolicy]) -> Outbound:
        adapter, gov = self.adapter, self.gov
        original = forward
        blocked = moderation_blocked(self.state, classification, facts)
        if blocked:
            gov.update(refusal(gov.decision, "MODERATION_BLOCKED", blocked))
            gov.enforced = True
            raise ModerationBlocked(f"The request was blocked for category '{blocked[0]}'.")
        decision = gov.decision
        if gov.effective_decision == "refuse":
            raise PolicyRefused(decision.obligations.message or "The request was refused by policy.")
        if gov.effective_decision == "escalate":
            return await self._escalate(forward)
        if gov.enforced:
            redactor = decision.obligations.redactor
            if redactor is not None:
                forward = adapter.map_input_texts(forward, lambda text: redactor.apply(text)[0])
            if decision.decision in ("rewrite", "summary") and decision.obligations.instruction:
                forward = adapter.with_instruction(forward, decision.obligations.instruction)
        client_asked_usage = True
        if adapter.is_stream(forward):
            forward, client_asked_usage = adapter.prepare_stream(forward)
        provider = self.state.config.provider_for(adapter.provider_kind, facts.model)
        request = self.state.upstreams.build_request(
            provider, "POST", adapter.upstream_path, self.headers,
            self.encoded if forward is original else encode_body(forward))
        exchange = Exchange(self.state.upstreams.client_for(provider), request,
                            self.state.config.timeouts)
        upstream_started = time.perf_counter()
        owned: Exchange | None = exchange
        try:
            with cut_at_grace_end():
                response = await exchange.start()
            headers = relayable_response_headers(response.headers)
            headers.extend(self.reservation.headers)
            if exchange.is_event_stream and response.is_success:
                monitor = _monitor_factory(policies, facts, gov.enforced)
                governor = StreamGovernor(adapter, gov, monitor,
                                          client_asked_usage=client_asked_usage)
                owned = None

                async def close() -> None:
                    # Runs even if the client left before the stream started: the event of a
                    # request is never lost.
                    await exchange.aclose()
                    with trio.CancelScope(shield=True):
                        await self._finish(499, "client_disconnected", release=False)

                return Outbound(status=response.status_code, headers=headers, stream=OwnedStream(
                    self._stream(exchange, governor, upstream_started), close))
            with cut_at_grace_end():
                raw = await exchange.read_body()
        finally:
            if owned is not None:
                await owned.aclose()
        self.upstream_seconds = time.perf_counter() - upstream_started
        return await self._whole(response.status_code, headers, raw, facts, policies)

    async def _whole(self, status: int, headers: list[tuple[str, str]], raw: bytes,
                     facts: dsl.RequestFacts, policies: list[dsl.CompiledPolicy]) -> Outbound:
        adapter, gov = self.adapter, self.gov
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = None
        if not 200 <= status < 300:  # the upstream's own error passes through, policy added
            if isinstance(payload, dict):
                raw = orjson.dumps({**payload, "policy": gov.policy_object()})
            await self._finish(status, "upstream_error", release=True)
            return Outbound(status=status, headers=_json_headers(headers), body=raw)
        if not isinstance(payload, dict):
            raise UpstreamUnavailable("The upstream sent a malformed JSON response.")
        usage = adapter.response_usage(payload)
        if usage is not None:
            self.input_tokens, self.output_tokens = usage.input_tokens, usage.output_tokens
        if any(p.has_output_rules for p in policies):
            text = adapter.output_text(payload)
            decision = gov.decision
            for policy in policies:
                decision = combine(decision, policy.evaluate_output(facts, text, decision))
            gov.update(dataclasses.replace(decision, stage="output"))
            if gov.effective_decision in ("refuse", "escalate"):
                # The output never reaches the client; the tokens were used all the same.
                raise PolicyRefused(decision.obligations.message or DEFAULT_REFUSAL)
            redactor = decision.obligations.redactor
            if gov.enforced and redactor is not None:
                payload = adapter.map_output_texts(payload, lambda t: redactor.apply(t)[0])
        payload["policy"] = gov.policy_object()
        await self._finish(status, "completed", release=False)
        return Outbound(status=status, headers=_json_headers(headers), body=orjson.dumps(payload))

    async def _stream(self, exchange: Exchange, governor: StreamGovernor,
                      upstream_started: float) -> AsyncIterator[bytes]:
        outcome, status = "completed", 200
        try:
            async with aclosing(until_cut(exchange.frames(self.adapter))) as batches:
                async for batch in batches:
                    out = b"".join(governor.feed(frame, payload) for frame, payload in batch)
                    if out:
                        yield out
                    if governor.stopped:
                        outcome = "refused"
                        return
            tail = governor.finish()
            if governor.stopped:
                outcome = "refused"
            if tail:
                yield tail
        except (UpstreamError, ShuttingDown) as error:
            outcome = "shutdown" if isinstance(error, ShuttingDown) else "upstream_error"
            status = error.status
            yield self.adapter.stream_error_frame(error, {"policy": self.gov.policy_object()})
        except trio.Cancelled:
            outcome, status = "client_disconnected", 499
            raise
        except Exception:
            outcome, status = "internal_error", 500
            log.exception("governed stream failed")
            yield self.adapter.stream_error_frame(
                GatewayError("The gateway failed while streaming."),
                {"policy": self.gov.policy_object()})
        finally:
            self.upstream_seconds = time.perf_counter() - upstream_started
            self.input_tokens, self.output_tokens = governor.input_tokens, governor.output_tokens
            if not governor.usage_reported or (outcome != "completed"
                                               and not governor.output_tokens):
                # The stream ended before its usage (client gone, upstream reset, stopped by
                # policy): the upstream read the input and wrote at least what was streamed.
                self.input_tokens = max(self.input_tokens, self.estimated_input_tokens)
                self.output_tokens = max(self.output_tokens, -(-governor.output_chars // 4))
            with trio.CancelScope(shield=True):
                await self._finish(status, outcome, release=False)

    # --- effects -----------------------------------------------------------------------------

    async def _escalate(self, forward: dict[str, Any]) -> Outbound:
        decision = self.gov.decision
        reply = self.adapter.holding_reply(forward, decision.obligations.message
                                           or DEFAULT_HOLDING_REPLY)
        reply["policy"] = self.gov.policy_object()
        event = self._event(200, "escalated")
        path = decision.obligations.escalation_path
        if path and path.startswith(("http://", "https://")):
            self.state.notify_escalation(path, event)  # the very event that is recorded
        await self._finish(200, "escalated", release=True, event=event)
        return Outbound.json(200, reply, list(self.reservation.headers))

    async def _finish(self, status: int, outcome: str, *, release: bool,
                      event: dict[str, Any] | None = None) -> None:
        if self.recorded:
            return
        self.recorded = True
        if release and not self.input_tokens and not self.output_tokens:
            await self.state.quotas.release(self.reservation)
        else:
            await self.state.quotas.settle(self.reservation, self.input_tokens,
                                           self.output_tokens)
        self.state.rollout_observe(self.gov)
        self.state.events.emit(event if event is not None else self._event(status, outcome))
        record = current_record()
        if record is not None:
            record.project_id, record.decision = self.gov.project_id, self.gov.effective_decision
            record.status, record.outcome = status, outcome
            if self.upstream_seconds:
                record.upstream_seconds = self.upstream_seconds

    def _event(self, status: int, outcome: str) -> dict[str, Any]:
        # Admitted while the quota store was down (fail open): the event says so.
        unenforced = ({"quota_unenforced": self.reservation.unenforced}
                      if self.reservation.unenforced else {})
        return policy_event("enforcement", self.gov, status=status, outcome=outcome,
                      input_tokens=self.input_tokens, output_tokens=self.output_tokens,
                      latency=time.perf_counter() - self.started, upstream=self.upstream_seconds,
                      **unenforced)


def policy_event(event_type: str, gov: Governance, *, status: int, outcome: str,
                 input_tokens: int, output_tokens: int, latency: float, upstream: float,
                 **extra: Any) -> dict[str, Any]:
    """An enforcement or simulation event (SPEC §9.2): decision fields, never text. The
    request's `x-request-id` is added (as `request_id`) to find its access log line."""
    d = gov.decision
    record = current_record()
    if record is not None:
        extra.setdefault("request_id", record.request_id)
    return base_event(
        event_type, user_id=gov.user_id, org_id=gov.account_id, policy_id=gov.policy_id,
        policy_name=gov.policy_name, policy_revision=gov.policy_revision,
        data_classification=gov.data_classification, decision=d.decision,
        effective_decision=gov.effective_decision, enforced=gov.enforced,
        rollout_mode=gov.rollout_mode, reason_code=d.reason_code,
        triggered_categories=list(d.triggered_categories),
        allowlist_hits=list(d.allowlist_hits), denylist_hits=list(d.denylist_hits),
        redacted_spans=dict(d.redacted_spans), policy_target=gov.policy_target,
        policy_user=gov.policy_user, quota_subject=gov.quota_subject,
        project_id=gov.project_id, project_label=gov.project_label, model=gov.model,
        surface=gov.surface, stream=gov.stream, status=status,
        usage={"input_tokens": input_tokens, "output_tokens": output_tokens},
        latency_ms=round(latency * 1000, 3),
        overhead_ms=round(max(latency - upstream, 0.0) * 1000, 3),
        outcome=outcome, **extra,
    )


def moderation_blocked(state: GatewayState, classification: Any, facts: dsl.RequestFacts
                        ) -> list[str]:
    """Always-blocked categories (every surface) and the request's own flagged ones
    (category surfaces only, SPEC §5.5). Not subject to rollout."""
    always = state.config.always_blocked_categories
    flagged = facts.flagged_categories if facts.surface in CATEGORY_SURFACES else frozenset()
    if not always and not flagged:
        return []
    return [c for c in classification.triggered() if c in always or c in flagged]


def _outcome_of(error: GatewayError) -> str:
    if isinstance(error, ShuttingDown):
        return "shutdown"
    if isinstance(error, UpstreamError):
        return "upstream_error"
    if isinstance(error, PolicyRefused | ModerationBlocked):
        return "refused"
    return "error"


def refusal(decision: dsl.Decision, reason: str, categories: list[str]) -> dsl.Decision:
    triggered = tuple(dict.fromkeys((*decision.triggered_categories, *categories)))
    return dataclasses.replace(decision, decision="refuse", reason_code=reason,
                               triggered_categories=triggered)


def _monitor_factory(policies: list[dsl.CompiledPolicy], facts: dsl.RequestFacts,
                     enforced: bool) -> Any:
    with_rules = [p for p in policies if p.has_output_rules]
    if not with_rules:
        return None
    if len(with_rules) == 1:
        policy = with_rules[0]
        return lambda decision: policy.output_monitor(facts, decision, enforced)
    return lambda decision: WholeBlockMonitor(with_rules, facts, decision, enforced)


def _json_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() != "content-type"] + [
        ("content-type", "application/json")]
