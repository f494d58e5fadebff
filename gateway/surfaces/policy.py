"""The governed surface, `/policy/*` (SPEC §1, §3-§7): the request lifecycle up to the decision.

authenticate → plan → body and gateway fields → project → policy → quota admission → classify →
decide (project policy, plus any inline policy) → moderation → rollout → act on the decision
(refuse, escalate, or forward with redactions and instructions) → output rules (whole response,
or incrementally on the stream) → settle quota → one event. Every answer carries the `policy`
object once a policy was evaluated. The steps before the upstream call are pure and in memory;
`gateway.surfaces.policy_run.GovernedRun` acts on the decision.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import trio

import dsl
from gateway.adapters import CHAT, MESSAGES, RESPONSES
from gateway.adapters.base import Adapter, decode_json_object
from gateway.errors import (
    InvalidApiKey,
    InvalidRequest,
    PlanRequired,
    PolicyIdMismatch,
    PolicyNotLinked,
    ProjectDisabled,
    ProjectForbidden,
    ProjectNotFound,
    ProjectRequired,
    QuotaUnavailable,
)
from gateway.http.access_log import current_record
from gateway.http.wire import Inbound, Outbound
from gateway.identity.keys import Caller, credential_from_headers
from gateway.policy.governance import (
    GatewayFields,
    Governance,
    combine,
    encode_body,
    read_gateway_fields,
)
from gateway.quota.limits import (
    QuotaRefused,
    QuotaRequest,
    estimate_tokens,
)
from gateway.state import GatewayState
from gateway.surfaces.policy_run import GovernedRun, moderation_blocked, policy_event, refusal

SIMULATED_SURFACES = {a.surface: a for a in (CHAT, MESSAGES, RESPONSES)}


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
        except (QuotaRefused, QuotaUnavailable) as refused:
            self._refuse_for_quota(adapter, caller, request, refused, started)
            raise
        try:
            gov = self._decide(adapter, caller, request)
            gov.quota = reservation.remaining
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.state.quotas.release(reservation)
            raise
        run = GovernedRun(self.state, adapter, gov, reservation, started, inbound.headers,
                   encoded=request.encoded)
        return await run.act(request.forward, request.facts, request.classification,
                             request.policies)

    def _refuse_for_quota(self, adapter: Adapter, caller: Caller, request: _Request,
                          refused: QuotaRefused | QuotaUnavailable, started: float) -> None:
        """The 429's (or, quota store down and failing closed, the 503's) `policy` object and
        its event. Quotas ignore rollout (always enforced), and the policy is not evaluated:
        the request goes nowhere."""
        loaded, facts = request.loaded, request.facts
        mode, _ = self.state.rollout_preview(loaded, facts.effective_target,
                                             request.quota_subject)
        gov = _governance(adapter, caller, request,
                          dsl.Decision(decision="refuse", reason_code=refused.reason_code),
                          enforced=True, mode=mode,
                          classification=loaded.policy.classification)
        gov.quota = refused.remaining
        refused.extra.setdefault("policy", gov.policy_object())
        record = current_record()
        if record is not None:
            record.project_id, record.decision = request.project.id, "refuse"
            if isinstance(refused, QuotaRefused):  # a 429; the 503 has its own metric
                record.quota_refusal = refused.reason_code
        self.state.events.emit(policy_event(
            "enforcement", gov, status=refused.status,
            outcome="quota_exceeded" if isinstance(refused, QuotaRefused) else "quota_unavailable",
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
        blocked = moderation_blocked(self.state, request.classification, request.facts)
        if blocked:
            gov.update(refusal(gov.decision, "MODERATION_BLOCKED", blocked))
            gov.enforced = True
        decision = gov.decision
        self.state.events.emit(policy_event(
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
        loaded = request.loaded
        if simulated:
            mode, enforced = self.state.rollout_preview(loaded, facts.effective_target,
                                                        request.quota_subject)
        else:
            mode, enforced = self.state.rollout_for(loaded, facts.effective_target,
                                                    request.quota_subject, decision)
        return _governance(adapter, caller, request, decision, enforced=enforced, mode=mode,
                           classification=governing.classification)


def _governance(adapter: Adapter, caller: Caller, request: _Request, decision: dsl.Decision, *,
                enforced: bool, mode: str, classification: str | None) -> Governance:
    """What every answer and event of `request` says about it, around `decision`."""
    loaded, project, facts = request.loaded, request.project, request.facts
    return Governance(
        policy_id=loaded.policy_id, policy_revision=loaded.revision,
        policy_name=loaded.name, data_classification=classification,
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
