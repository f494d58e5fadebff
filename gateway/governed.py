"""The governed surface, `/policy/*` (SPEC §1, §3-§7): the request lifecycle.

authenticate → plan → body and gateway fields → project → policy → quota admission → classify →
decide (project policy, plus any inline policy) → moderation → rollout → act on the decision
(refuse, escalate, or forward with redactions and instructions) → output rules (whole response,
or incrementally on the stream) → settle quota → one event. Every answer carries the `policy`
object once a policy was evaluated. The steps before the upstream call are pure and in memory.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import orjson
import trio

import dsl
from dsl.decision import CATEGORY_SURFACES
from gateway.access_log import current_record
from gateway.adapters import CHAT, MESSAGES, RESPONSES
from gateway.adapters.base import Adapter, decode_json_object
from gateway.errors import (
    GatewayError,
    InvalidApiKey,
    InvalidRequest,
    ModerationBlocked,
    PlanRequired,
    PolicyIdMismatch,
    PolicyNotLinked,
    PolicyRefused,
    ProjectDisabled,
    ProjectForbidden,
    ProjectNotFound,
    ProjectRequired,
    UpstreamError,
    UpstreamUnavailable,
)
from gateway.events import base_event
from gateway.governance import (
    GatewayFields,
    Governance,
    combine,
    encode_body,
    read_gateway_fields,
)
from gateway.identity import Caller, credential_from_headers
from gateway.policy_stream import DEFAULT_REFUSAL, StreamGovernor, WholeBlockMonitor
from gateway.quota import (
    QuotaRefused,
    QuotaRequest,
    Reservation,
    estimate_tokens,
)
from gateway.shutdown import CUT, ShuttingDown, next_frames
from gateway.state import GatewayState
from gateway.upstream import Exchange, relayable_response_headers
from gateway.wire import Inbound, Outbound, OwnedStream

log = logging.getLogger("gateway.policy")
SIMULATED_SURFACES = {a.surface: a for a in (CHAT, MESSAGES, RESPONSES)}
DEFAULT_HOLDING_REPLY = ("Thanks for your message. A specialist will review it and follow up "
                         "with you.")


class PolicySurface:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    # --- identity and resolution (SPEC §3) ------------------------------------------------

    def authenticate(self, inbound: Inbound) -> Caller:
        credential = credential_from_headers(inbound.headers)
        if credential is None:
            raise InvalidApiKey("You didn't provide an API key or token.")
        return self.state.authenticate(credential)

    def resolve_project(self, caller: Caller, fields: GatewayFields) -> Any:
        project_id = fields.project_id
        if project_id is None:
            if caller.key is None:
                raise ProjectRequired(
                    "Name the project with the X-Policy-Project header or 'policy_project_id'.")
            project_id = caller.key.project_id
            if project_id is None:
                raise ProjectRequired(
                    "This key is not bound to a project; name one with X-Policy-Project.")
        project = self.state.directory.project(project_id)
        if project is None:
            raise ProjectNotFound(f"Project '{project_id}' does not exist.")
        if project.account_id != caller.account.id:
            raise ProjectForbidden(f"You may not use project '{project_id}'.")
        if caller.key is not None:
            if caller.key.project_id is not None and caller.key.project_id != project_id:
                raise ProjectForbidden(f"This key may not use project '{project_id}'.")
        elif caller.jwt is not None and not self.state.directory.jwt_may_use(caller, project_id):
            raise ProjectForbidden(f"You are not granted project '{project_id}'.")
        if project.status != "active":
            raise ProjectDisabled(f"Project '{project_id}' is disabled.")
        return project

    def require_plan(self, inbound: Inbound) -> Caller:
        caller = self.authenticate(inbound)
        if not caller.account.has_policy_gateway:
            raise PlanRequired("Your plan does not include the Policy Gateway.")
        return caller

    # --- the lifecycle (SPEC §4) -------------------------------------------------------------

    async def handle(self, adapter: Adapter, inbound: Inbound) -> Outbound:
        started = time.perf_counter()
        caller = self.require_plan(inbound)
        request = self._prepare(adapter, inbound, caller)
        quotas, settings = request.loaded.policy.quotas, self.state.quota_settings
        configured_project, configured_user = settings.configured_limits(request.project.id)
        try:
            reservation = await self.state.quotas.admit(QuotaRequest(
                project_id=request.project.id, quota_subject=request.quota_subject,
                estimated_tokens=estimate_tokens(
                    request.facts.estimated_input_tokens, request.facts.max_output_tokens,
                    settings.default_output_tokens),
                project_limits=(*request.project.budget_limits, *quotas.project,
                                *configured_project),
                user_limits=(*request.project.user_quota_limits, *quotas.user,
                             *configured_user)))
        except QuotaRefused as refused:
            self._refuse_for_quota(adapter, caller, request, refused, started)
            raise
        try:
            gov = self._decide(adapter, caller, request)
            gov.quota = reservation.remaining
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.state.quotas.release(reservation)
            raise
        run = _Run(self, adapter, gov, reservation, started, inbound.headers,
                   encoded=request.encoded)
        return await run.act(request.forward, request.facts, request.classification,
                             request.policies)

    def _refuse_for_quota(self, adapter: Adapter, caller: Caller, request: _Request,
                          refused: QuotaRefused, started: float) -> None:
        """The 429's `policy` object and its event. Quotas ignore rollout (always enforced),
        and the policy is not evaluated: the request goes nowhere."""
        loaded, facts = request.loaded, request.facts
        mode, _ = self.state.rollout_preview(loaded, facts.effective_target,
                                             request.quota_subject)
        gov = Governance(
            policy_id=loaded.policy_id, policy_revision=loaded.revision,
            policy_name=loaded.name, data_classification=loaded.policy.classification,
            project_id=request.project.id, project_label=request.project.name,
            account_id=caller.account.id, user_id=caller.user_id,
            policy_target=facts.effective_target, policy_user=request.fields.policy_user,
            quota_subject=request.quota_subject, surface=adapter.surface, model=facts.model,
            stream=facts.stream, decision=dsl.Decision(decision="refuse",
                                                        reason_code=refused.reason_code),
            enforced=True, rollout_mode=mode, quota=refused.remaining)
        refused.extra.setdefault("policy", gov.policy_object())
        record = current_record()
        if record is not None:
            record.project_id, record.decision = request.project.id, "refuse"
            record.quota_refusal = refused.reason_code
        self.state.events.emit(_event(
            "enforcement", gov, status=refused.status, outcome="quota_exceeded",
            input_tokens=0, output_tokens=0, latency=time.perf_counter() - started,
            upstream=0.0))

    async def simulate(self, inbound: Inbound) -> Outbound:
        """`POST /policy/simulate`: the decision for a request body, without the upstream.

        The body is a request of the API named by `surface` (`chat.completions`, the default,
        `messages` or `responses`), with the same gateway headers and fields as a real call.
        """
        caller = self.require_plan(inbound)
        body = decode_json_object(inbound.body)
        surface = inbound.headers.get("x-policy-surface") or body.pop("surface", None)
        # `surface` comes from the caller: any JSON value (a list would not even be hashable).
        adapter = (SIMULATED_SURFACES.get(surface or "chat.completions")
                   if surface is None or isinstance(surface, str) else None)
        if adapter is None:
            raise InvalidRequest(f"'surface' must be one of {sorted(SIMULATED_SURFACES)}.",
                                 param="surface")
        request = self._prepare(adapter, Inbound(
            method=inbound.method, path=inbound.path, headers=inbound.headers,
            body=encode_body(body)), caller)
        gov = self._decide(adapter, caller, request, simulated=True)
        blocked = _moderation_blocked(self.state, request.classification, request.facts)
        if blocked:
            gov.update(_refusal(gov.decision, "MODERATION_BLOCKED", blocked))
            gov.enforced = True
        decision = gov.decision
        self.state.events.emit(_event(
            "simulation", gov, status=200, outcome="simulated", input_tokens=0, output_tokens=0,
            latency=0.0, upstream=0.0,
            scenario_categories=list(request.classification.triggered())))
        return Outbound.json(200, {
            "object": "policy.simulation",
            "surface": adapter.surface,
            "policy": gov.policy_object(),
            "fired_rules": list(decision.fired_rules),
            "error": decision.error,
            "upstream_called": gov.effective_decision not in ("refuse", "escalate"),
            "moderation_blocked": blocked,
            "obligations": {
                "instruction": decision.obligations.instruction,
                "message": decision.obligations.message,
                "escalation_path": decision.obligations.escalation_path,
                "redacts": decision.obligations.redactor is not None,
            },
        })

    def _prepare(self, adapter: Adapter, inbound: Inbound, caller: Caller) -> _Request:
        """Body, gateway fields, project, policies and facts: everything before quota."""
        body = decode_json_object(inbound.body)
        fields, forward = read_gateway_fields(inbound.headers, body)
        adapter.validate(forward)
        project = self.resolve_project(caller, fields)
        if project.policy_id is None:
            raise PolicyNotLinked("Project is not linked to a policy")
        loaded = self.state.registry.get(project.policy_id)
        if loaded is None:
            raise PolicyNotLinked("Project is not linked to a policy")
        if fields.expected_policy_id is not None and fields.expected_policy_id != loaded.policy_id:
            raise PolicyIdMismatch(
                f"Project '{project.id}' is governed by policy '{loaded.policy_id}', not "
                f"'{fields.expected_policy_id}'.", param="policy_id")
        inline = (self.state.inline_policies.compile(fields.inline_policy)
                  if fields.inline_policy is not None else None)
        governing, extra = loaded.policy, inline
        if inline is not None and project.allow_inline_policy:
            governing, extra = inline, None
        view = adapter.input_view(forward)
        facts = dsl.RequestFacts(
            surface=adapter.surface, model=str(forward.get("model", "")),
            target=fields.target, policy_user=fields.policy_user, project_id=project.id,
            message_count=view.message_count, estimated_input_tokens=view.estimated_input_tokens,
            max_output_tokens=view.max_output_tokens, has_tools=view.has_tools,
            stream=adapter.is_stream(forward), input_text=view.input_text,
            last_user_text=view.last_user_text, system_text=view.system_text,
            flagged_categories=fields.flagged_categories,
        )
        return _Request(
            fields=fields, forward=forward, encoded=encode_body(forward), project=project,
            loaded=loaded,
            policies=[p for p in (governing, extra) if p is not None], facts=facts,
            quota_subject=fields.policy_user or caller.user_id,
            estimated_tokens=view.estimated_input_tokens + (view.max_output_tokens or 0),
            classification=None)

    def _decide(self, adapter: Adapter, caller: Caller, request: _Request, *,
                simulated: bool = False) -> Governance:
        facts = request.facts
        request.classification = classification = dsl.classify(facts.input_text)
        governing, *extra = request.policies
        decision = governing.evaluate_input(facts, classification)
        for policy in extra:
            decision = combine(decision, policy.evaluate_input(facts, classification))
        loaded, project = request.loaded, request.project
        if simulated:
            mode, enforced = self.state.rollout_preview(loaded, facts.effective_target,
                                                        request.quota_subject)
        else:
            mode, enforced = self.state.rollout_for(loaded, facts.effective_target,
                                                    request.quota_subject, decision)
        return Governance(
            policy_id=loaded.policy_id, policy_revision=loaded.revision,
            policy_name=loaded.name, data_classification=governing.classification,
            project_id=project.id, project_label=project.name,
            account_id=caller.account.id, user_id=caller.user_id,
            policy_target=facts.effective_target, policy_user=request.fields.policy_user,
            quota_subject=request.quota_subject, surface=adapter.surface, model=facts.model,
            stream=facts.stream, decision=decision, enforced=enforced, rollout_mode=mode)


@dataclass(slots=True)
class _Request:
    fields: GatewayFields
    forward: dict[str, Any]
    #: `forward` as JSON, encoded up front: a body that cannot be forwarded is refused before
    #: evaluation, and an unchanged body is not encoded twice.
    encoded: bytes
    project: Any
    loaded: Any
    #: The governing policy first, then any inline policy evaluated in addition.
    policies: list[dsl.CompiledPolicy]
    facts: dsl.RequestFacts
    quota_subject: str
    estimated_tokens: int
    classification: Any


class _Run:
    """One governed request after its input decision: acting on it, and its single event."""

    def __init__(self, surface: PolicySurface, adapter: Adapter, gov: Governance,
                 reservation: Reservation, started: float, headers: Mapping[str, str], *,
                 encoded: bytes) -> None:
        self.encoded = encoded
        self.state = surface.state
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
        blocked = _moderation_blocked(self.state, classification, facts)
        if blocked:
            gov.update(_refusal(gov.decision, "MODERATION_BLOCKED", blocked))
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
        record = current_record()
        draining = record.draining if record is not None else None
        try:
            async with aclosing(exchange.frames(self.adapter)) as frames:
                while True:
                    try:
                        batch = await next_frames(draining, frames)
                    except StopAsyncIteration:
                        break
                    if batch is CUT:
                        raise ShuttingDown("The gateway is shutting down and ended this stream; "
                                           "retry the request.")
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
        return _event("enforcement", self.gov, status=status, outcome=outcome,
                      input_tokens=self.input_tokens, output_tokens=self.output_tokens,
                      latency=time.perf_counter() - self.started, upstream=self.upstream_seconds)


def _event(event_type: str, gov: Governance, *, status: int, outcome: str, input_tokens: int,
           output_tokens: int, latency: float, upstream: float, **extra: Any) -> dict[str, Any]:
    """An enforcement or simulation event (SPEC §9.2): decision fields, never text."""
    d = gov.decision
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


def _moderation_blocked(state: GatewayState, classification: Any, facts: dsl.RequestFacts
                        ) -> list[str]:
    """Always-blocked categories (every surface) and the request's own flagged ones
    (category surfaces only, SPEC §5.5). Not subject to rollout."""
    always = state.config.always_blocked_categories
    flagged = facts.flagged_categories if facts.surface in CATEGORY_SURFACES else frozenset()
    if not always and not flagged:
        return []
    return [c for c in classification.triggered() if c in always or c in flagged]


def _outcome_of(error: GatewayError) -> str:
    if isinstance(error, UpstreamError):
        return "upstream_error"
    if isinstance(error, PolicyRefused | ModerationBlocked):
        return "refused"
    return "error"


def _refusal(decision: dsl.Decision, reason: str, categories: list[str]) -> dsl.Decision:
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

