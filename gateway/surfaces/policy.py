"""The governed surface, `/policy/*` (docs/governed-surface.md, docs/security.md): the request
lifecycle up to the decision.

authenticate → plan → body and gateway fields → project → policy → quota admission → classify →
decide (project policy, plus any inline policy) → moderation → rollout → act on the decision
(refuse, escalate, or forward with redactions and instructions) → output rules (whole response,
or incrementally on the stream) → settle quota → one event. Every answer carries the `policy`
object once a policy was evaluated. The steps before the upstream call are pure and in memory
(gateway/policy/prepared.py); `gateway.surfaces.policy_run.GovernedRun` acts on the decision.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import trio

import dsl
from gateway.adapters.base import JSON, Adapter, decode_json_object
from gateway.errors import (
    InvalidApiKey,
    PlanRequired,
    PolicyNotLinked,
    QuotaRefused,
    QuotaUnavailable,
)
from gateway.http.access_log import current_record
from gateway.http.wire import Inbound, Outbound
from gateway.identity.credentials import resolve_project
from gateway.identity.keys import Caller, credential_from_headers
from gateway.identity.projects import Project
from gateway.policy.governance import GatewayFields
from gateway.policy.lifecycle import Record, RequestLifecycle
from gateway.policy.prepared import (
    PreparedRequest,
    decide_moderated,
    governance_for,
    prepare_request,
    simulate_moderated,
    simulated_adapter,
)
from gateway.policy.records import policy_event
from gateway.quota.limits import QuotaRequest, estimate_tokens
from gateway.state import GatewayState
from gateway.surfaces.policy_run import GovernedRun, note_outcome

if TYPE_CHECKING:
    from gateway.admin.registry import LoadedPolicy


class PolicySurface:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    # --- identity and resolution (docs/security.md) -------------------------------------------

    def authenticate(self, inbound: Inbound) -> Caller:
        credential = credential_from_headers(inbound.headers)
        if credential is None:
            raise InvalidApiKey("You didn't provide an API key or token.")
        return self.state.authenticate(credential)

    def resolve_project(self, caller: Caller, fields: GatewayFields) -> Project:
        return resolve_project(self.state.directory, caller, fields.project_id)

    def require_plan(self, inbound: Inbound) -> Caller:
        caller = self.authenticate(inbound)
        if not caller.account.has_policy_gateway:
            raise PlanRequired("Your plan does not include the Policy Gateway.")
        return caller

    # --- the lifecycle (docs/governed-surface.md) ---------------------------------------------

    async def handle(self, adapter: Adapter, inbound: Inbound) -> Outbound:
        started = time.perf_counter()
        caller = self.require_plan(inbound)
        request = await self._prepare(adapter, inbound.headers,
                                      decode_json_object(inbound.body), caller)
        lifecycle = RequestLifecycle(request.facts.estimated_input_tokens)
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
        except (QuotaRefused, QuotaUnavailable) as refused:
            self._refuse_for_quota(adapter, caller, request, refused, lifecycle, started)
            raise
        lifecycle.admitted()
        try:
            gov = await decide_moderated(adapter, caller, request, self.state.rollouts.resolve,
                                         self.state.moderator)
            gov.quota = reservation.remaining
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.state.quotas.release(reservation)
            raise
        run = GovernedRun(self.state, adapter, gov, reservation, lifecycle, started,
                          inbound.headers, encoded=request.encoded)
        return await run.act(request.forward, request.facts, request.classification,
                             request.policies)

    def _refuse_for_quota(self, adapter: Adapter, caller: Caller, request: PreparedRequest,
                          refused: QuotaRefused | QuotaUnavailable, lifecycle: RequestLifecycle,
                          started: float) -> None:
        """The 429's (or, quota store down and failing closed, the 503's) `policy` object and
        its event. Quotas ignore rollout (always enforced), and the policy is not evaluated:
        the request goes nowhere."""
        loaded, facts = request.loaded, request.facts
        mode, _ = self.state.rollouts.preview(loaded, facts.effective_target,
                                              request.quota_subject)
        gov = governance_for(adapter, caller, request,
                             dsl.Decision(decision="refuse", reason_code=refused.reason_code),
                             enforced=True, mode=mode,
                             classification=loaded.policy.classification)
        gov.quota = refused.remaining
        refused.extra.setdefault("policy", gov.policy_object())
        outcome = "quota_exceeded" if isinstance(refused, QuotaRefused) else "quota_unavailable"
        (record,) = lifecycle.quota_refused(refused.status, outcome)
        assert isinstance(record, Record)
        self.state.events.emit(policy_event(
            "enforcement", gov, status=record.status, outcome=record.outcome,
            input_tokens=0, output_tokens=0, latency=time.perf_counter() - started,
            upstream=0.0))
        note_outcome(gov, record.status, record.outcome)
        access = current_record()
        if access is not None and isinstance(refused, QuotaRefused):  # the 503 has its own metric
            access.quota_refusal = refused.reason_code

    async def simulate(self, inbound: Inbound) -> Outbound:
        """`POST /policy/simulate`: the decision for a request body, without the upstream.

        The body is a request of the API named by `surface` (`chat.completions`, the default,
        `messages` or `responses`), with the same gateway headers and fields as a real call.
        """
        caller = self.require_plan(inbound)
        return await self.simulate_as(caller, inbound.headers, decode_json_object(inbound.body))

    async def simulate_as(self, caller: Caller, headers: Mapping[str, str], body: JSON
                          ) -> Outbound:
        """A simulation as `caller` (the caller itself, or the project's account for an admin)."""
        adapter = simulated_adapter(headers, body)
        request = await self._prepare(adapter, headers, body, caller)
        answer, event = await simulate_moderated(
            adapter, caller, request, self.state.rollouts.preview,
            self.state.config.always_blocked_categories, self.state.escalation.shown,
            self.state.moderator)
        self.state.events.emit(event)
        return Outbound.json(200, answer)

    async def _prepare(self, adapter: Adapter, headers: Mapping[str, str], body: JSON,
                       caller: Caller) -> PreparedRequest:
        def resolve(fields: GatewayFields) -> tuple[Project, LoadedPolicy | None]:
            project = self.resolve_project(caller, fields)
            if project.policy_id is None:
                raise PolicyNotLinked("Project is not linked to a policy")
            return project, self.state.registry.get(project.policy_id)

        return await prepare_request(adapter, headers, body, caller, resolve,
                                     self.state.inline_policies.compile)
