"""Acting on a governed request's input decision (docs/governed-surface.md): the second half of the
`/policy/*` lifecycle, after `gateway.surfaces.policy.PolicySurface` decided.

Refuse or escalate without the upstream, or forward with redactions and instructions; check the
whole response or govern the stream frame by frame; settle the quota reservation; and record the
request's single event, whatever happened (client gone, upstream failure, shutdown).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson
import trio

import dsl
from gateway.adapters.base import Adapter
from gateway.errors import (
    GatewayError,
    ModerationBlocked,
    PolicyRefused,
    ShuttingDown,
    UpstreamError,
    UpstreamUnavailable,
)
from gateway.http.access_log import current_record
from gateway.http.wire import Outbound
from gateway.moderation.output import moderated_output, reads_output_categories, with_output_record
from gateway.moderation.stream_windows import WindowedStream
from gateway.policy.decide import (
    apply_input_obligations,
    combined,
    moderation_blocked,
    output_decisions,
    output_monitor_factory,
    refusal,
)
from gateway.policy.governance import Governance, encode_body, escalation_paths
from gateway.policy.lifecycle import Effect, Release, RequestLifecycle, Settle
from gateway.policy.mcp_servers import ProviderServers, ServerJudge
from gateway.policy.provider_tools import ProviderTools
from gateway.policy.records import policy_event
from gateway.policy.stream import DEFAULT_REFUSAL, StreamGovernor
from gateway.policy.toolcalls import DEFAULT_TOOL_REFUSAL, ToolJudge, tool_definition_filter
from gateway.quota.limits import Reservation
from gateway.state import GatewayState
from gateway.upstream.exchange import Exchange, relayable_response_headers
from gateway.upstream.relay import StreamEnd, open_answer, read_answer, stream_answer

log = logging.getLogger("gateway.policy")
DEFAULT_HOLDING_REPLY = ("Thanks for your message. A specialist will review it and follow up "
                         "with you.")


class GovernedRun:
    """One governed request after its input decision: acting on it, and carrying out what its
    lifecycle (gateway/policy/lifecycle.py) says to do about the quota and the event."""

    def __init__(self, state: GatewayState, adapter: Adapter, gov: Governance,
                 reservation: Reservation, lifecycle: RequestLifecycle, started: float,
                 headers: Mapping[str, str], *, encoded: bytes) -> None:
        self.encoded = encoded
        self.state = state
        self.headers = headers
        self.adapter = adapter
        self.gov = gov
        self.reservation = reservation
        self.lifecycle = lifecycle
        self.started = started
        self.upstream_seconds = 0.0
        #: Usage the upstream reported for a whole answer.
        self.input_tokens = 0
        self.output_tokens = 0
        #: The input's classification, which output rules may read too.
        self.classification: Any = None
        #: Decides the tool calls the model issues (made once the input decision is known).
        self.judge = ToolJudge([], dsl.RequestFacts(), enforced=False)

    async def act(self, forward: dict[str, Any], facts: dsl.RequestFacts,
                  classification: Any, policies: list[dsl.CompiledPolicy]) -> Outbound:
        try:
            return await self._act(forward, facts, classification, policies)
        except GatewayError as error:
            await self._end(error.status, _outcome_of(error))
            for name, value in self.reservation.headers:
                error.headers.setdefault(name, value)
            error.extra.setdefault("policy", self.gov.policy_object())
            raise
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await self._end(499, "client_disconnected")
            raise
        except Exception:
            await self._end(500, "internal_error")
            raise

    async def _act(self, forward: dict[str, Any], facts: dsl.RequestFacts, classification: Any,
                   policies: list[dsl.CompiledPolicy]) -> Outbound:
        adapter, gov = self.adapter, self.gov
        original = forward
        self.classification = classification
        blocked = moderation_blocked(self.state.config.always_blocked_categories,
                                     classification, facts)
        if blocked:
            gov.update(refusal(gov.decision, "MODERATION_BLOCKED", blocked))
            gov.enforced = True
            raise ModerationBlocked(f"The request was blocked for category '{blocked[0]}'.")
        decision = gov.decision
        if gov.effective_decision == "refuse":
            raise PolicyRefused(decision.obligations.message or "The request was refused by policy.")
        if gov.effective_decision == "escalate":
            return await self._escalate(forward)
        # Provider-run MCP tools are decided on the server their URL names, not their label.
        servers = ProviderServers.declared(forward, self.state.config.mcp_servers) if (
            adapter.surface == "responses") else ProviderServers({})
        if gov.enforced:
            forward = apply_input_obligations(adapter, forward, decision)
            # Tools the policy would refuse whatever their arguments are not offered at all.
            forward, removed = adapter.without_tools(
                forward, servers.definition_filter(tool_definition_filter(policies, facts)))
            gov.tools_removed = tuple(removed)
        self.judge = ServerJudge(policies, facts, enforced=gov.enforced,
                                 always_blocked=self.state.config.always_blocked_categories,
                                 servers=servers)
        client_asked_usage = True
        if adapter.is_stream(forward):
            forward, client_asked_usage = adapter.prepare_stream(forward)
        provider = self.state.config.provider_for(adapter.provider_kind, facts.model)
        request = self.state.upstreams.build_request(
            provider, "POST", adapter.upstream_path, self.headers,
            self.encoded if forward is original else encode_body(forward))
        exchange = Exchange(self.state.upstreams.client_for(provider), request,
                            self.state.config.timeouts)
        self.lifecycle.upstream_called()
        upstream_started = time.perf_counter()
        response = await open_answer(exchange)
        headers = relayable_response_headers(response.headers)
        headers.extend(self.reservation.headers)
        if exchange.is_event_stream and response.is_success:
            governor = StreamGovernor(adapter, gov, output_monitor_factory(
                policies, facts, gov.enforced), client_asked_usage=client_asked_usage,
                tool_judge=self.judge)
            self.lifecycle.stream_started()

            async def stream_done(end: StreamEnd) -> None:
                self.upstream_seconds = time.perf_counter() - upstream_started
                await self._carry_out(self.lifecycle.finish_stream(
                    end.status, end.outcome, governor.counts()))

            transform: StreamGovernor | WindowedStream = governor
            if reads_output_categories(self.state.moderator, policies, facts):
                transform = WindowedStream(governor, self.state.moderator, policies, facts,
                                           classification)
            return Outbound(status=response.status_code, headers=headers,
                            stream=stream_answer(exchange, adapter, transform, stream_done))
        raw = await read_answer(exchange)
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
            await self._end(status, "upstream_error")
            return Outbound(status=status, headers=_json_headers(headers), body=raw)
        if not isinstance(payload, dict):
            raise UpstreamUnavailable("The upstream sent a malformed JSON response.")
        usage = adapter.response_usage(payload)
        if usage is not None:
            self.input_tokens, self.output_tokens = usage.input_tokens, usage.output_tokens
        payload = self._judge_tool_calls(payload)
        payload = self._judge_provider_tools(payload)
        if any(p.has_output_rules for p in policies):
            text = adapter.output_text(payload)
            if reads_output_categories(self.state.moderator, policies, facts):
                decision, found = await moderated_output(
                    self.state.moderator, policies, facts, text, gov.decision,
                    self.classification, asked=self.state.moderator.asks_external(gov.policy_id))
                gov.moderation = with_output_record(gov.moderation, found)
                outputs = [decision]
            else:
                outputs = output_decisions(policies, facts, text, gov.decision)
                decision = combined(outputs, base=gov.decision)
            gov.escalations = tuple(dict.fromkeys((*gov.escalations,
                                                   *escalation_paths(outputs))))
            gov.update(dataclasses.replace(decision, stage="output"))
            if gov.effective_decision in ("refuse", "escalate"):
                # The output never reaches the client; the tokens were used all the same.
                raise PolicyRefused(decision.obligations.message or DEFAULT_REFUSAL)
            redactor = decision.obligations.redactor
            if gov.enforced and redactor is not None:
                payload = adapter.map_output_texts(payload, lambda t: redactor.apply(t)[0])
        payload["policy"] = gov.policy_object()
        await self._end(status, "completed")
        return Outbound(status=status, headers=_json_headers(headers), body=orjson.dumps(payload))

    def _judge_tool_calls(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The answer after the tool rules decided each tool call the model issued in it:
        arguments redacted, or the whole answer refused for an enforced refusal."""
        stopped: dsl.Decision | None = None

        def judged(name: str, arguments: str, server: str | None = None) -> str:
            nonlocal stopped
            verdict = self.judge.decide_into(self.gov, name, arguments, server)
            if verdict.stopped and stopped is None:
                stopped = verdict.decision
            return verdict.arguments

        payload = self.adapter.map_tool_calls(payload, judged)
        if stopped is not None:
            # Its arguments never reach the client; the tokens were used all the same.
            raise PolicyRefused(stopped.obligations.message or DEFAULT_TOOL_REFUSAL)
        return payload

    def _judge_provider_tools(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The answer after the policy decided what the provider's tools returned (redacted,
        or the whole answer refused) and listed (hidden when always refused)."""
        run = ProviderTools(self.judge, self.gov)
        payload = self.adapter.map_provider_tools(payload, run)
        if run.stopped:
            # What the tool returned never reaches the client.
            raise PolicyRefused(self.gov.decision.obligations.message or DEFAULT_REFUSAL)
        return payload

    # --- effects -----------------------------------------------------------------------------

    async def _escalate(self, forward: dict[str, Any]) -> Outbound:
        decision = self.gov.decision
        reply = self.adapter.holding_reply(forward, decision.obligations.message
                                           or DEFAULT_HOLDING_REPLY)
        reply["policy"] = self.gov.policy_object()
        # The event names the escalation targets; their connectors deliver it (at least once).
        await self._end(200, "escalated")
        return Outbound.json(200, reply, list(self.reservation.headers))

    async def _end(self, status: int, outcome: str) -> dict[str, Any] | None:
        return await self._carry_out(self.lifecycle.finish(
            status, outcome, self.input_tokens, self.output_tokens))

    async def _carry_out(self, effects: list[Effect]) -> dict[str, Any] | None:
        """Do what the lifecycle said; returns the event it recorded, if it recorded one."""
        event = None
        for effect in effects:
            if isinstance(effect, Release):
                await self.state.quotas.release(self.reservation)
            elif isinstance(effect, Settle):
                await self.state.quotas.settle(self.reservation, effect.input_tokens,
                                               effect.output_tokens)
            else:
                # Admitted while the quota store was down (fail open): the event says so.
                unenforced = ({"quota_unenforced": self.reservation.unenforced}
                              if self.reservation.unenforced else {})
                event = policy_event(
                    "enforcement", self.gov, status=effect.status, outcome=effect.outcome,
                    input_tokens=effect.input_tokens, output_tokens=effect.output_tokens,
                    latency=time.perf_counter() - self.started, upstream=self.upstream_seconds,
                    **unenforced)
                self.state.events.emit(event)
                note_outcome(self.gov, effect.status, effect.outcome, self.upstream_seconds)
        return event


def note_outcome(gov: Governance, status: int, outcome: str, upstream_seconds: float = 0.0
                 ) -> None:
    """What the access log line of this request says about its governance."""
    record = current_record()
    if record is not None:
        record.project_id, record.decision = gov.project_id, gov.effective_decision
        record.status, record.outcome = status, outcome
        if upstream_seconds:
            record.upstream_seconds = upstream_seconds


def _outcome_of(error: GatewayError) -> str:
    if isinstance(error, ShuttingDown):
        return "shutdown"
    if isinstance(error, UpstreamError):
        return "upstream_error"
    if isinstance(error, PolicyRefused | ModerationBlocked):
        return "refused"
    return "error"


def _json_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() != "content-type"] + [
        ("content-type", "application/json")]
