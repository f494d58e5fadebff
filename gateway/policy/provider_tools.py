"""What the tools a provider runs for the client return and offer, decided by the policy.
Pure: no I/O.

A Responses request may name remote MCP servers (`{"type": "mcp", ...}` tools); the provider
then lists their tools and calls them itself, and the answer carries what they returned
(gateway/adapters/mcp_items.py). The call is decided by the tool rules like any tool call the
model issues (gateway/policy/toolcalls.py); this module decides the rest:

- what a call returned (its `output`, or its `error`) is read by the output rules, once per
  call, as `output` and as `tool_result`, with the call's `tool.name`, `tool.server` and
  `tool_arguments`, as the MCP surface reads a `tools/call` result. JSON text that spells words
  with escapes is read decoded too. An enforced refusal or escalation refuses the whole answer
  (a stream ends with the API's own termination frames before the result's frame goes out); an
  enforced redaction rewrites every string of the result; in shadow the result goes out as the
  tool wrote it and the verdict is recorded all the same. The request's decision (the `policy`
  object, the event) takes the verdict in, as it takes in the model's own output;
- a listed tool that the policy refuses whatever its arguments (`policy_refuses_tool`, the test
  that hides a tool from an MCP `tools/list`) is taken out of the listing when the policy is
  enforced, and named in the `policy` object's `tools_removed`.

Frames repeat items (`response.output_item.done`, then the `response.completed` snapshot): each
distinct result is decided once and goes out the same way wherever it is repeated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import dsl
from gateway.adapters.reading import with_unescaped
from gateway.policy.decide import combined, output_decisions
from gateway.policy.governance import MAX_LISTED_TOOL_CALLS, Governance, escalation_paths
from gateway.policy.toolcalls import (
    MAX_TOOL_DEFINITIONS,
    ToolJudge,
    policy_refuses_tool,
    redacted_arguments,
    tool_call_facts,
)

Rewrite = Callable[[str], str]
#: The redactor an enforced verdict applies to a decided text, or None (an enforced refusal
#: sets `stopped` instead).
Verdict = dsl.Redactor | None


def _unchanged(text: str) -> str:
    return text


def _withheld(text: str) -> str:
    """A refused text: nothing of it goes out (the answer carrying it is refused)."""
    return ""


class ProviderTools:
    """Decides, for one governed request, what the provider's remote tools returned and
    offered, and the approvals it asks for (`gateway.adapters.base.ProviderRun`). `stopped`
    once an enforced verdict refuses the answer."""

    def __init__(self, judge: ToolJudge, gov: Governance) -> None:
        self._judge = judge
        self._gov = gov
        self._with_output_rules = [p for p in judge.policies if p.has_output_rules]
        #: ("result" or "approval", name, server, arguments, text) -> its verdict.
        self._verdicts: dict[tuple[str, str, str, str, str], Verdict] = {}
        #: (name, server) -> whether the listing hides the tool.
        self._hidden: dict[tuple[str, str], bool] = {}
        self.stopped = False

    def result(self, name: str, arguments: str, server: str, text: str) -> Rewrite:
        server = self._judge.server_of(server)  # the answer names it by the caller's label
        key = ("result", name, server, arguments, text)
        if key not in self._verdicts:
            facts = tool_call_facts(self._judge.facts, name, arguments, server)
            read = with_unescaped([text])  # `tool_result` reads the decoded spelling too
            self._verdicts[key] = self._decided(
                dataclasses.replace(facts, tool_result_text=read), read)
        redactor = self._verdicts[key]
        if self.stopped:
            return _withheld
        return _unchanged if redactor is None else lambda found: redactor.apply(found)[0]

    def approval(self, name: str, server: str, arguments: str) -> str:
        """The arguments of an approval request, read by output rules as the model's output
        (the tool rules decided the call already): redacted as JSON values, or as they are."""
        server = self._judge.server_of(server)
        key = ("approval", name, server, arguments, "")
        if key not in self._verdicts:
            facts = tool_call_facts(self._judge.facts, name, arguments, server)
            self._verdicts[key] = self._decided(facts, with_unescaped([arguments]))
        redactor = self._verdicts[key]
        if self.stopped or redactor is None:
            return arguments
        return redacted_arguments(arguments, redactor)

    @property
    def enforced(self) -> bool:
        return self._gov.enforced

    def hides_listed(self, name: str, server: str) -> bool:
        if not self._gov.enforced:
            return False  # in shadow nothing is taken out of what the client gets
        server = self._judge.server_of(server)
        key = (name, server)
        hidden = self._hidden.get(key)
        if hidden is None:
            # A listing of more tools than a request may define is not read further: the rest
            # are hidden (each look costs tens of microseconds on the event loop).
            if len(self._hidden) >= MAX_TOOL_DEFINITIONS:
                return True
            hidden = self._hidden[key] = policy_refuses_tool(
                self._judge.policies, self._judge.facts, name, server)
            if hidden and len(self._gov.tools_removed) < MAX_LISTED_TOOL_CALLS:
                self._gov.note_tools_removed([name])
        return hidden

    def _decided(self, facts: dsl.RequestFacts, read: str) -> Verdict:
        """The output rules' verdict on `read`, taken into the request's decision: the
        redactor to apply when enforced (`stopped` when an enforced verdict refuses)."""
        if not self._with_output_rules:
            return None
        gov = self._gov
        decisions = output_decisions(self._with_output_rules, facts, read, gov.decision)
        decision = dataclasses.replace(combined(decisions, base=gov.decision), stage="output")
        gov.escalations = tuple(dict.fromkeys((*gov.escalations,
                                               *escalation_paths(decisions))))
        gov.update(decision)
        if not gov.enforced:
            return None
        if decision.decision in ("refuse", "escalate"):
            self.stopped = True
            return None
        return decision.obligations.redactor
