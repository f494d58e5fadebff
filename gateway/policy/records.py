"""The events governance records, built in one place each: enforcement and simulation events of
a request's `Governance`, and revision events of a policy's change. Decision fields only, never
the request's or the answer's text."""

from __future__ import annotations

from typing import Any

from gateway.events.sink import base_event
from gateway.http.access_log import current_record
from gateway.policy.governance import Governance


def policy_event(event_type: str, gov: Governance, *, status: int, outcome: str,
                 input_tokens: int, output_tokens: int, latency: float, upstream: float,
                 **extra: Any) -> dict[str, Any]:
    """An enforcement or simulation event. The request's `x-request-id` is added (as
    `request_id`) to find its access log line."""
    d = gov.decision
    record = current_record()
    if record is not None:
        extra.setdefault("request_id", record.request_id)
    if event_type == "enforcement" and gov.enforced and gov.escalations:
        extra["escalation_targets"] = list(gov.escalations)  # delivered by their connectors
    if gov.tool_calls:  # each model-issued call's name and verdict, never its arguments
        extra.setdefault("tool_calls", list(gov.tool_calls))
        if gov.tool_calls_unlisted:
            extra.setdefault("tool_calls_unlisted", gov.tool_calls_unlisted)
    if gov.tools_removed:
        extra.setdefault("tools_removed", list(gov.tools_removed))
    if gov.moderation is not None:
        extra.setdefault("moderation", gov.moderation)
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


def revision_event(*, policy_id: str, revision: int, name: str, classification: str | None,
                   edit_type: str, source: str, user_id: str | None = None,
                   **extra: Any) -> dict[str, Any]:
    """The `revision` event of one policy change, with the revision's source as its snapshot.
    `user_id` is who made the change (an admin, a CLI user); None for a file edit or the
    gateway itself (an automatic rollback)."""
    return base_event(
        "revision", user_id=user_id, org_id=None, policy_id=policy_id, policy_name=name,
        policy_revision=revision, data_classification=classification, edit_type=edit_type,
        config_snapshot=source, **extra)
