"""One governed `tools/call` (or `prompts/get`, `resources/read`: gateway/mcp/kinds.py):
project, quota, decision, the call itself, output rules, and its one enforcement event (never
with the arguments' or the result's text).

The request's lifecycle (gateway/policy/lifecycle.py) decides when to give the quota back and
guarantees the one event, whatever ends the call: a refusal, an escalation, the answer, an
upstream failure, or the client leaving mid-stream (which also cancels the upstream call).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx2
import orjson
import trio

import dsl
from gateway.adapters.base import JSON
from gateway.errors import (
    GatewayError,
    PolicyRefused,
    QuotaRefused,
    QuotaUnavailable,
)
from gateway.http.wire import Inbound, Outbound, OwnedStream
from gateway.identity.keys import Caller
from gateway.identity.projects import Project
from gateway.mcp.answers import is_sse, rewritten_json, rewritten_sse
from gateway.mcp.jsonrpc import Message, error_message
from gateway.mcp.kinds import KINDS
from gateway.mcp.relay import McpUpstreams, read_bounded, relayed_headers
from gateway.mcp.settings import McpServer
from gateway.mcp.tools import (
    MCP_SURFACE,
    error_with_policy,
    with_policy,
)
from gateway.policy.decide import decide_input, decide_output, moderation_blocked, refusal
from gateway.policy.governance import GatewayFields, Governance, escalation_paths
from gateway.policy.json_strings import map_strings
from gateway.policy.json_strings import strings_found as map_strings_found
from gateway.policy.lifecycle import Effect, Phase, Release, RequestLifecycle, Settle
from gateway.policy.records import policy_event
from gateway.quota.limits import QuotaRequest, Reservation
from gateway.state import GatewayState
from gateway.surfaces.policy_run import note_outcome

if TYPE_CHECKING:
    from gateway.admin.registry import LoadedPolicy

log = logging.getLogger("gateway")
#: The rule a configuration denial is reported under (fired_rules of the event).
CONFIG_DENIAL_RULE = "mcp.tool_not_permitted"
DEFAULT_REFUSAL = "This tool call is not allowed by policy."
#: Notification fields that carry no text of the tool's: ids and enums.
NOT_READ_PARAMS = frozenset({"progressToken", "requestId", "level", "_meta"})


@dataclass(frozen=True, slots=True)
class Resolved:
    """Who calls, for which project, under which policy (resolved by the surface)."""

    caller: Caller
    fields: GatewayFields
    project: Project
    loaded: LoadedPolicy


class ToolCall:
    def __init__(self, state: GatewayState, upstreams: McpUpstreams, server: McpServer,
                 resolved: Resolved, inbound: Inbound, message: Message, upstream_id: str
                 ) -> None:
        self.state, self.upstreams, self.server = state, upstreams, server
        self.caller, self.inbound, self.message = resolved.caller, inbound, message
        self.resolved = resolved
        self.started = time.perf_counter()
        self.upstream_seconds = 0.0
        self.lifecycle = RequestLifecycle()
        assert message.method is not None
        self.kind = KINDS[message.method]
        # The tool's or prompt's name, or the resource's URI.
        self.tool_name, self.arguments = self.kind.params(message.params)
        self.gov: Governance | None = None
        self.reservation: Reservation | None = None
        self.answered = False
        self.upstream_called = False
        #: The upstream answered (2xx): the call ran, whatever its answer holds.
        self.upstream_answered = False
        #: The id the request goes upstream with (never the client's: gateway/mcp/upstream_ids.py).
        self.upstream_id = upstream_id

    # --- before the upstream -------------------------------------------------------------------

    async def run(self) -> Outbound:
        """The answer to the call; whatever ends it, its one event is recorded."""
        try:
            return await self._run()
        except BaseException as exc:  # the client left (Cancelled), or a bug of ours
            gone = isinstance(exc, trio.Cancelled)
            with trio.CancelScope(shield=True):
                if self.lifecycle.phase is not Phase.ADMISSION:  # admitted: one event
                    if gone and self.upstream_called:
                        await self._cancel_upstream()
                    await self._end(*((499, "client_disconnected") if gone
                                      else (500, "internal_error")))
            raise

    async def _run(self) -> Outbound:
        fields, project, loaded = (self.resolved.fields, self.resolved.project,
                                   self.resolved.loaded)
        self.policy = loaded.policy
        self.facts = facts = self.kind.facts(self.server, self.tool_name, self.arguments,
                                             target=fields.target,
                                             policy_user=fields.policy_user,
                                             project_id=project.id)
        subject = fields.policy_user or self.caller.user_id
        mode, _ = self.state.rollouts.preview(loaded, facts.effective_target, subject)
        self.gov = Governance(
            policy_id=loaded.policy_id, policy_revision=loaded.revision,
            policy_name=loaded.name, data_classification=loaded.policy.classification,
            project_id=project.id, project_label=project.name,
            account_id=self.caller.account.id, user_id=self.caller.user_id,
            policy_target=facts.effective_target, policy_user=fields.policy_user,
            quota_subject=subject, surface=MCP_SURFACE, model=facts.model, stream=False,
            decision=dsl.Decision(), enforced=True, rollout_mode=mode)
        if self.kind.is_tool_call:
            await self._admit(project, subject)
        self.lifecycle.admitted()
        try:
            self._decide(loaded, subject)
            return await self._act()
        except GatewayError as error:
            await self._end(error.status, "refused" if isinstance(error, PolicyRefused)
                            else "upstream_error" if error.status >= 500 else "error")
            raise

    async def _admit(self, project: Project, subject: str) -> None:
        """The call admitted against the `tool_calls` quota, or refused with its event."""
        assert self.gov is not None
        gov = self.gov
        configured_project, configured_user = self.state.quota_settings.configured_limits(
            project.id)
        # The policy's own `quota` blocks too: only their `tool_calls` limits apply to a call.
        quotas = self.policy.quotas
        try:
            self.reservation = await self.state.quotas.admit(QuotaRequest(
                project_id=project.id, quota_subject=subject, estimated_tokens=0,
                project_limits=(*project.budget_limits, *quotas.project, *configured_project),
                user_limits=(*project.user_quota_limits, *quotas.user, *configured_user),
                tool_call=True))
        except (QuotaRefused, QuotaUnavailable) as refused:
            # A quota used up (429), or the shared quota store down and failing closed (503):
            # either way the call goes nowhere, and its one event says which.
            gov.update(dsl.Decision(decision="refuse", reason_code=refused.reason_code))
            gov.quota = refused.remaining
            refused.extra.setdefault("policy", gov.policy_object())
            outcome = ("quota_exceeded" if isinstance(refused, QuotaRefused)
                       else "quota_unavailable")
            self._record(self.lifecycle.quota_refused(refused.status, outcome))
            raise
        gov.quota = self.reservation.remaining

    def _decide(self, loaded: Any, subject: str) -> None:
        assert self.gov is not None
        gov, facts = self.gov, self.facts
        if self.kind.is_tool_call and not self.server.tool_permitted(self.tool_name):
            # The configuration's allow/deny lists are not rolled out: always enforced.
            gov.update(dsl.Decision(decision="refuse", reason_code="TOOL_NOT_PERMITTED",
                                    fired_rules=(CONFIG_DENIAL_RULE,)))
            return
        classification = dsl.classify(facts.input_text)
        decision = decide_input([self.policy], facts, classification)
        gov.rollout_mode, gov.enforced = self.state.rollouts.resolve(
            loaded, facts.effective_target, subject, decision)
        gov.update(decision)
        gov.escalations = escalation_paths([decision])
        blocked = moderation_blocked(self.state.config.always_blocked_categories,
                                     classification, facts)
        if blocked:
            gov.update(refusal(decision, "MODERATION_BLOCKED", blocked))
            gov.enforced = True

    async def _act(self) -> Outbound:
        assert self.gov is not None
        gov, decision = self.gov, self.gov.decision
        if gov.effective_decision == "refuse":
            raise PolicyRefused(decision.obligations.message or DEFAULT_REFUSAL,
                                extra={"policy": gov.policy_object()})
        if gov.effective_decision == "escalate":
            return await self._escalate()
        arguments = self.arguments
        redactor = decision.obligations.redactor
        if gov.enforced and redactor is not None and arguments:
            arguments = map_strings(arguments, lambda text: redactor.apply(text)[0])
        raw = {**self.message.raw, "id": self.upstream_id}
        if arguments is not self.arguments:
            raw["params"] = {**raw["params"], "arguments": arguments}
        return await self._forward(orjson.dumps(raw))

    async def _escalate(self) -> Outbound:
        assert self.gov is not None
        obligations = self.gov.decision.obligations
        result = with_policy(self.kind.holding_result(obligations.message, self.tool_name),
                             self.gov.policy_object())
        # The event names the escalation targets; their connectors deliver it (at least once).
        await self._end(200, "escalated")
        return Outbound.json(200, {"jsonrpc": "2.0", "id": self.message.id, "result": result})

    # --- the upstream --------------------------------------------------------------------------

    async def _forward(self, body: bytes) -> Outbound:
        self.lifecycle.upstream_called()
        self.upstream_called = True
        sent = time.perf_counter()
        # `Mcp-Param-*` copies of argument values never go: a server may read them instead of
        # the arguments the policy decided on.
        response = await self.upstreams.open(self.server, "POST", self.inbound.headers, body,
                                             param_headers=False)
        self.upstream_seconds = time.perf_counter() - sent
        headers = relayed_headers(response)
        deadline = trio.current_time() + self.server.total_timeout
        if not 200 <= response.status_code < 300:  # the upstream's HTTP error, relayed as is
            try:
                content = await read_bounded(response, self.server, deadline)
            finally:
                await response.aclose()
            await self._end(response.status_code, "upstream_error")
            return Outbound(status=response.status_code, headers=headers, body=content)
        self.upstream_answered = True  # any 2xx: a client would read its body
        if not is_sse(response):
            try:
                content = await rewritten_json(response, self.server, self.upstream_id,
                                               self.message.id, self._rewrite, deadline)
            finally:
                await response.aclose()
            self.upstream_seconds = time.perf_counter() - sent
            await self._end(*(self._outcome() if self.answered else (502, "upstream_error")))
            return Outbound(status=200, headers=headers, body=content)
        assert self.gov is not None
        self.gov.stream = True  # the answer is relayed as an event stream
        frames = self._stream(response, deadline, sent)

        async def close() -> None:
            await response.aclose()
            if self.lifecycle.phase is not Phase.DONE:  # the stream was never started
                await self._cancel_upstream()
                await self._end(499, "client_disconnected")

        return Outbound(status=200, headers=headers, stream=OwnedStream(frames, close))

    async def _stream(self, response: httpx2.Response, deadline: float, sent: float
                      ) -> AsyncGenerator[bytes, None]:
        status, outcome = 499, "client_disconnected"
        try:
            async with aclosing(rewritten_sse(response, self.server, self.upstream_id,
                                              self.message.id, self._rewrite, deadline,
                                              self._notification)) as frames:
                async for frame in frames:
                    yield frame
            status, outcome = self._outcome()
        except GatewayError as error:
            status, outcome = error.status, "upstream_error"
            yield b"data: " + orjson.dumps(error_message(self.message.id, error)) + b"\n\n"
        finally:
            if self.answered and outcome == "client_disconnected":  # gone after the answer
                status, outcome = self._outcome()
            self.upstream_seconds = time.perf_counter() - sent
            with trio.CancelScope(shield=True):
                if not self.answered and outcome == "client_disconnected":
                    await self._cancel_upstream()
                await self._end(status, outcome)

    async def _cancel_upstream(self) -> None:
        """Tell the upstream the client is gone, so that it stops the tool (MCP's
        `notifications/cancelled`); closing the connection alone does not stop it."""
        note = {"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": self.upstream_id, "reason": "client disconnected"}}
        with trio.move_on_after(self.server.connect_timeout):
            try:
                response = await self.upstreams.open(self.server, "POST", self.inbound.headers,
                                                     orjson.dumps(note))
                await response.aclose()
            except GatewayError as error:
                log.warning("could not cancel the call on MCP server %s: %s", self.server.name,
                            error.message)

    def _rewrite(self, message: JSON) -> JSON:
        """The response message after output rules read the result (or the server's error,
        whose message and data a tool can fill as well)."""
        assert self.gov is not None
        self.answered = True
        gov, result, error = self.gov, message.get("result"), message.get("error")
        if not isinstance(result, dict) and not isinstance(error, dict):
            return message
        text = self.kind.result_text(result) if isinstance(result, dict) else "\n".join(
            map_strings_found(error, keys=True, fixed_levels=1))
        if self.policy.has_output_rules:
            gov.update(decide_output([self.policy], self._answered(text), text, gov.decision))
        decision = gov.decision
        if gov.effective_decision == "refuse":
            refused = PolicyRefused(decision.obligations.message or DEFAULT_REFUSAL,
                                    extra={"policy": gov.policy_object()})
            return error_message(message.get("id"), refused)
        redactor = decision.obligations.redactor if gov.enforced else None
        if isinstance(result, dict):
            if redactor is not None:
                result = self.kind.redact_result(result, redactor)
            return {**message, "result": with_policy(result, gov.policy_object())}
        assert isinstance(error, dict)
        if redactor is not None:
            error = map_strings(error, lambda t: redactor.apply(t)[0], fixed_levels=1)
        return {**message, "error": error_with_policy(error, gov.policy_object())}

    def _notification(self, message: JSON) -> JSON | None:
        """A notification the tool sends while it runs (progress, log lines): output rules
        read its text too, so a tool cannot leak through them what its result may not hold.
        What they find counts toward the call's decision; a refusal drops the notification
        (and the result will be refused), a redaction rewrites it."""
        assert self.gov is not None
        params = message.get("params")
        if not self.policy.has_output_rules or not isinstance(params, dict):
            return message
        text = "\n".join(map_strings_found(params, NOT_READ_PARAMS, keys=True, fixed_levels=1))
        if not text:
            return message
        gov = self.gov
        gov.update(decide_output([self.policy], self._answered(text), text, gov.decision))
        if gov.effective_decision == "refuse":
            return None
        redactor = gov.decision.obligations.redactor if gov.enforced else None
        if redactor is None:
            return message
        return {**message, "params": map_strings(params, lambda t: redactor.apply(t)[0],
                                                 NOT_READ_PARAMS, fixed_levels=1)}

    def _answered(self, text: str) -> dsl.RequestFacts:
        """The facts with what the tool answered (or said while it ran): `tool_result`."""
        if not self.kind.is_tool_call:
            return self.facts
        return dataclasses.replace(self.facts, tool_result_text=text)

    def _outcome(self) -> tuple[int, str]:
        """(status, outcome) of an answered call for its event."""
        assert self.gov is not None
        if self.gov.effective_decision == "refuse":
            return PolicyRefused.status, "refused"
        return 200, "completed"

    # --- effects -------------------------------------------------------------------------------

    async def _end(self, status: int, outcome: str) -> dict[str, Any] | None:
        event = None
        for effect in self.lifecycle.finish(status, outcome):
            if not isinstance(effect, Release | Settle):
                event = self._record([effect])
            elif self.reservation is None:
                continue
            # A call the upstream ran counts, although it used no tokens, and so does one it
            # answered with HTTP 200 whatever the answer holds; one refused before it, or
            # that the upstream failed to take, is given back.
            elif self.upstream_answered or (self.upstream_called
                                            and outcome != "upstream_error"):
                await self.state.quotas.settle(self.reservation, 0, 0)
            else:
                await self.state.quotas.release(self.reservation)
        return event

    def _record(self, effects: list[Effect]) -> dict[str, Any] | None:
        assert self.gov is not None
        event = None
        for effect in effects:
            if isinstance(effect, Release | Settle):
                continue
            # Admitted while the quota store was down (fail open): the event says so, as on
            # the model APIs.
            unenforced = self.reservation.unenforced if self.reservation is not None else None
            event = policy_event(
                "enforcement", self.gov, status=effect.status, outcome=effect.outcome,
                input_tokens=0, output_tokens=0, latency=time.perf_counter() - self.started,
                upstream=self.upstream_seconds,
                mcp={"server": self.server.name, "method": self.kind.method},
                **self.kind.event(self.tool_name),
                **({"quota_unenforced": unenforced} if unenforced else {}))
            self.state.events.emit(event)
            note_outcome(self.gov, effect.status, effect.outcome, self.upstream_seconds)
        return event
