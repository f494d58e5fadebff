"""A governed request before the quota and the upstream: prepared, decided, or simulated.

Pure functions over values the caller resolved: the surface (`gateway/surfaces/policy.py`)
resolves projects and policies from its in-memory snapshots, the simulate command from the
database, and both then prepare, decide and simulate through this one path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dsl
from gateway.adapters import CHAT, MESSAGES, RESPONSES
from gateway.adapters.base import JSON, Adapter
from gateway.errors import InvalidRequest, PolicyIdMismatch, PolicyNotLinked
from gateway.identity.keys import Caller
from gateway.identity.projects import Project
from gateway.moderation import ModerationOutcome, Moderator
from gateway.policy.decide import (
    combined,
    input_decisions,
    moderation_blocked,
    refusal,
    request_facts,
)
from gateway.policy.governance import (
    GatewayFields,
    Governance,
    encode_body,
    escalation_paths,
    read_gateway_fields,
)
from gateway.policy.records import policy_event

if TYPE_CHECKING:
    from gateway.admin.registry import LoadedPolicy

#: Finds the project a request names (checking the caller may use it) and the policy in force.
Resolve = Callable[[GatewayFields], "tuple[Project, LoadedPolicy | None]"]
#: Compiles an inline policy (off the event loop, within its budget).
CompileInline = Callable[[Any], Awaitable[dsl.CompiledPolicy]]
#: How an escalation path is shown to a caller: a target's name, never a URL.
ShowEscalation = Callable[[str | None], str | None]
#: (rollout_mode, enforced) for a policy, target, quota subject and (for counting) decision.
RolloutOf = Callable[["LoadedPolicy", str, str, dsl.Decision], tuple[str, bool]]

SIMULATED_SURFACES = {a.surface: a for a in (CHAT, MESSAGES, RESPONSES)}


@dataclass(slots=True)
class PreparedRequest:
    fields: GatewayFields
    forward: JSON
    #: `forward` as JSON, encoded up front: a body that cannot be forwarded is refused before
    #: evaluation, and an unchanged body is not encoded twice.
    encoded: bytes
    project: Project
    loaded: LoadedPolicy
    #: The governing policy first, then any inline policy evaluated in addition.
    policies: list[dsl.CompiledPolicy]
    facts: dsl.RequestFacts
    quota_subject: str
    classification: Any = None


async def prepare_request(adapter: Adapter, headers: Mapping[str, str], body: JSON,
                          caller: Caller, resolve: Resolve, compile_inline: CompileInline
                          ) -> PreparedRequest:
    """Gateway fields, project, policies and facts: everything before the quota. The only
    await is an inline policy's compilation, which runs off the event loop within its budget
    (gateway/policy/inline.py), after the project was resolved."""
    fields, forward = read_gateway_fields(headers, body)
    adapter.validate(forward)
    project, loaded = resolve(fields)
    if loaded is None:
        raise PolicyNotLinked("Project is not linked to a policy")
    if fields.expected_policy_id is not None and fields.expected_policy_id != loaded.policy_id:
        raise PolicyIdMismatch(
            f"Project '{project.id}' is governed by policy '{loaded.policy_id}', not "
            f"'{fields.expected_policy_id}'.", param="policy_id")
    inline = (await compile_inline(fields.inline_policy)
              if fields.inline_policy is not None else None)
    governing, extra = loaded.policy, inline
    if inline is not None and project.allow_inline_policy:
        governing, extra = inline, None
    facts = request_facts(adapter, forward, target=fields.target,
                          policy_user=fields.policy_user, project_id=project.id,
                          flagged_categories=fields.flagged_categories)
    return PreparedRequest(
        fields=fields, forward=forward, encoded=encode_body(forward), project=project,
        loaded=loaded, policies=[p for p in (governing, extra) if p is not None], facts=facts,
        # A JWT names its own subject: X-Policy-User cannot spend another user's quota.
        quota_subject=(caller.jwt.subject or caller.user_id if caller.jwt is not None
                       else fields.policy_user or caller.user_id))


def decide(adapter: Adapter, caller: Caller, request: PreparedRequest, rollout: RolloutOf,
           moderation: ModerationOutcome | None = None) -> Governance:
    """Decide the input on `moderation` (the configured classifier's result, made beforehand:
    see `decide_moderated`) or else the built-in classifier's; `rollout` says whether the
    decision is enforced."""
    facts = request.facts
    classification = (moderation.classification if moderation is not None
                      else dsl.classify(facts.input_text))
    request.classification = classification
    decisions = input_decisions(request.policies, facts, classification)
    decision = combined(decisions)
    if moderation is not None:
        decision = moderation.applied(decision, request.policies)
    mode, enforced = rollout(request.loaded, facts.effective_target, request.quota_subject,
                             decision)
    gov = governance_for(adapter, caller, request, decision, enforced=enforced, mode=mode,
                         classification=request.policies[0].classification)
    # Every policy that escalated is notified, whichever decision won.
    gov.escalations = escalation_paths(decisions)
    if moderation is not None:
        gov.moderation = moderation.record()
    return gov


async def decide_moderated(adapter: Adapter, caller: Caller, request: PreparedRequest,
                           rollout: RolloutOf, moderator: Moderator) -> Governance:
    """`decide`, after the configured classifier (possibly a network call) classified the
    texts and images the policies read."""
    moderation = await moderator.classify_request(
        request.policies, request.facts, request.forward,
        asked=moderator.asks_external(request.loaded.policy_id))
    return decide(adapter, caller, request, rollout, moderation)


def governance_for(adapter: Adapter, caller: Caller, request: PreparedRequest,
                   decision: dsl.Decision, *, enforced: bool, mode: str,
                   classification: str | None) -> Governance:
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


def simulated_adapter(headers: Mapping[str, str], body: JSON) -> Adapter:
    """The API a simulation body is written in: `X-Policy-Surface` or the body's `surface`
    (removed from the body), chat completions by default."""
    surface = headers.get("x-policy-surface") or body.pop("surface", None)
    # `surface` comes from the caller: any JSON value (a list would not even be hashable).
    adapter = (SIMULATED_SURFACES.get(surface or "chat.completions")
               if surface is None or isinstance(surface, str) else None)
    if adapter is None:
        raise InvalidRequest(f"'surface' must be one of {sorted(SIMULATED_SURFACES)}.",
                             param="surface")
    return adapter


async def simulate_moderated(adapter: Adapter, caller: Caller, request: PreparedRequest,
                             preview: RolloutOf, always_blocked: Collection[str],
                             shown: ShowEscalation, moderator: Moderator) -> tuple[JSON, JSON]:
    """`simulate` on the configured classifier's categories, as a governed request gets them
    (an external classifier is called, through its cache and breaker)."""
    moderation = await moderator.classify_request(
        request.policies, request.facts, request.forward,
        asked=moderator.asks_external(request.loaded.policy_id))
    return simulate(adapter, caller, request, preview, always_blocked, shown, moderation)


def simulate(adapter: Adapter, caller: Caller, request: PreparedRequest, preview: RolloutOf,
             always_blocked: Collection[str], shown: ShowEscalation,
             moderation: ModerationOutcome | None = None) -> tuple[JSON, JSON]:
    """The decision for a request, without the upstream: (the answer, its simulation event).
    `preview` must not count toward auto-rollback: a simulation is not a governed request.
    Without `moderation`, the built-in classifier's categories."""
    gov = decide(adapter, caller, request, preview, moderation)
    blocked = moderation_blocked(always_blocked, request.classification, request.facts)
    if blocked:
        gov.update(refusal(gov.decision, "MODERATION_BLOCKED", blocked))
        gov.enforced = True
    decision = gov.decision
    event = policy_event(
        "simulation", gov, status=200, outcome="simulated", input_tokens=0, output_tokens=0,
        latency=0.0, upstream=0.0, scenario_categories=list(request.classification.triggered()))
    answer = {
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
            # A target's name or an address, never a URL (docs/security.md).
            "escalation_path": shown(decision.obligations.escalation_path),
            "redacts": decision.obligations.redactor is not None,
        },
    }
    return answer, event
