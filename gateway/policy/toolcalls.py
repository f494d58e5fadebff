"""Tool calls that models issue, decided by the policy's tool rules. Pure functions and values.

A model's tool call (chat `tool_calls` and the legacy `function_call`, messages `tool_use`
blocks, responses `function_call`, `custom_tool_call` and `mcp_call` items, the last on the
server its label stands for in the request, gateway/policy/mcp_servers.py) is decided like an MCP `tools/call`, through the one
input decision path (`decide_input`): the request's facts with the call's `tool_name`, its
arguments as the `tool_arguments` text, and as `input` the name on its first line followed by
the arguments (the convention the MCP surface uses), so `input` rules, denylists, PII and
categories read the call.

What a verdict means for the answer:
- refuse or escalate, enforced: the whole answer is refused, as when an output rule refuses it
  (a stream ends with the API's own termination frames), and the call's arguments never reach
  the client;
- a redaction, enforced: the arguments' string values are redacted (the JSON stays valid);
- anything else, or in shadow: the call goes out as the model wrote it, and the verdict is
  recorded all the same.

The `policy` object and the event list each call's name and verdict, never its arguments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

import dsl
from gateway.adapters.base import RemoveFn
from gateway.errors import InvalidRequest
from gateway.policy.decide import decide_input, moderation_blocked, refusal
from gateway.policy.governance import Governance, combine, escalation_paths
from gateway.policy.json_strings import MAX_JSON_DEPTH, json_depth, map_strings

#: What a tool call's verdict is recorded as in the `policy` object and the event.
ToolRecord = dict[str, Any]
DEFAULT_TOOL_REFUSAL = "A tool call in the response is not allowed by policy."
#: Distinct tool names a request may define on the governed surface: each is decided before the
#: request goes upstream (tens of microseconds each), and a body of hundreds of thousands of
#: tiny definitions must not hold the event loop for seconds. The providers allow far fewer.
MAX_TOOL_DEFINITIONS = 1024


def tool_call_facts(facts: dsl.RequestFacts, name: str, arguments: str,
                    server: str | None = None) -> dsl.RequestFacts:
    """The request's facts, about one tool call the model issued (`server`: the MCP server
    of a call the provider runs, else none)."""
    return dataclasses.replace(facts, tool_name=name, tool_server=server,
                               tool_arguments_text=arguments, input_text=f"{name}\n{arguments}")


@dataclass(frozen=True, slots=True)
class ToolVerdict:
    name: str
    decision: dsl.Decision
    #: The arguments the client gets (redacted when an enforced decision says so).
    arguments: str
    #: An enforced refusal or escalation: the answer carrying the call is refused.
    stopped: bool

    def record(self) -> ToolRecord:
        """What the `policy` object and the event say about the call: never its arguments."""
        return {"name": self.name, "decision": self.decision.decision,
                "reason_code": self.decision.reason_code,
                "fired_rules": list(self.decision.fired_rules)}


class ToolJudge:
    """Decides each tool call a model issues in one governed request."""

    def __init__(self, policies: Iterable[dsl.CompiledPolicy], facts: dsl.RequestFacts, *,
                 enforced: bool, always_blocked: Collection[str] = ()) -> None:
        self._policies = list(policies)
        self._facts = facts
        self._enforced = enforced
        self._always_blocked = always_blocked

    @property
    def policies(self) -> list[dsl.CompiledPolicy]:
        return self._policies

    @property
    def facts(self) -> dsl.RequestFacts:
        """The request's facts, about no tool call."""
        return self._facts

    def server_of(self, label: str) -> str:
        """The `tool.server` of a provider-run tool an answer names by `label`."""
        return label

    def decide(self, name: str, arguments: str, server: str | None = None) -> ToolVerdict:
        facts = tool_call_facts(self._facts, name, arguments, server)
        classification = dsl.classify(facts.input_text)
        decision = decide_input(self._policies, facts, classification)
        enforced = self._enforced
        blocked = moderation_blocked(self._always_blocked, classification, facts)
        if blocked:  # always-blocked categories ignore rollout, as on requests
            decision, enforced = refusal(decision, "MODERATION_BLOCKED", blocked), True
        decision = dataclasses.replace(decision, stage="output")
        stopped = enforced and decision.decision in ("refuse", "escalate")
        redactor = decision.obligations.redactor
        if enforced and not stopped and redactor is not None:
            arguments = redacted_arguments(arguments, redactor)
        return ToolVerdict(name, decision, arguments, stopped)

    def decide_into(self, gov: Governance, name: str, arguments: str,
                    server: str | None = None) -> ToolVerdict:
        """`decide`, the verdict recorded in the request's governance: listed, and counted
        toward the request's decision when it refuses, escalates or redacts (an escalation
        notifies its path, as on requests)."""
        verdict = self.decide(name, arguments, server)
        gov.note_tool_call(verdict.record())
        decision = verdict.decision
        if decision.decision in ("refuse", "escalate") or decision.obligations.redactor:
            gov.update(combine(gov.decision, decision))
            gov.escalations = tuple(dict.fromkeys((*gov.escalations,
                                                   *escalation_paths([decision]))))
        return verdict

    @staticmethod
    def unrewritable(decision: dsl.Decision) -> dsl.Decision:
        """`decision` (a redaction) as the refusal of arguments that cannot be rewritten
        where they stand."""
        return refusal(decision, "TOOL_ARGUMENTS_NOT_REWRITABLE", [])

    def redacted(self, verdict: ToolVerdict, arguments: str) -> str:
        """`arguments` (already rewritten by output rules) redacted as `verdict` says."""
        redactor = verdict.decision.obligations.redactor
        return arguments if redactor is None else redacted_arguments(arguments, redactor)


def redacted_arguments(arguments: str, redactor: dsl.Redactor) -> str:
    """Arguments JSON text with every string redacted, object keys included; still valid JSON.
    Text that is not JSON (a custom tool's free-form input), or JSON nested too deep to write
    again, is redacted as text."""
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return redactor.apply(arguments)[0]
    if json_depth(value) > MAX_JSON_DEPTH:  # deeper than orjson writes again
        return redactor.apply(arguments)[0]
    redacted = map_strings(value, lambda text: redactor.apply(text)[0])
    if redacted == value:
        return arguments  # nothing to redact: the model's own spelling goes out
    return orjson.dumps(redacted).decode()


def policy_refuses_tool(policies: Iterable[dsl.CompiledPolicy], facts: dsl.RequestFacts,
                        name: str, server: str | None = None) -> bool:
    """Whether the policies refuse a call of tool `name` whatever its arguments: a definition
    of it is taken out of a request's `tools` before the model sees it.

    The same test that hides a tool from an MCP `tools/list`: a refusing rule that reads only
    the tool's name and server (and the caller's target, user and project) fires, or the
    policy refuses by default and no rule can allow the tool. A rule about what the arguments
    hold never removes a definition: the model may still call the tool with harmless ones.
    """
    facts = tool_call_facts(facts, name, "", server)
    return any(dsl.policy_always_refuses_tool(policy, facts) for policy in policies)


def tool_definition_filter(policies: Iterable[dsl.CompiledPolicy], facts: dsl.RequestFacts
                           ) -> RemoveFn:
    """`policy_refuses_tool` for the definitions of one request: each distinct name (and MCP
    server) decided once, and at most `MAX_TOOL_DEFINITIONS` of them (more is the caller's
    error)."""
    policies = list(policies)
    decided: dict[tuple[str, str | None], bool] = {}

    def refuses(name: str, server: str | None = None) -> bool:
        key = (name, server)
        if key not in decided:
            if len(decided) >= MAX_TOOL_DEFINITIONS:
                raise InvalidRequest(f"A governed request may define at most "
                                     f"{MAX_TOOL_DEFINITIONS} tools.", param="tools")
            decided[key] = policy_refuses_tool(policies, facts, name, server)
        return decided[key]

    return refuses
