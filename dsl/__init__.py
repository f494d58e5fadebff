"""The policy language: parse, check, compile and evaluate policies (docs/dsl-interface.md).

Pure: no I/O, no clock, no randomness.  Importing this package builds nothing; the parser is
built on first use.
"""

from dsl.api import check, compile_policy
from dsl.classifiers import (
    CATEGORIES,
    CATEGORY_THRESHOLD,
    PII_KINDS,
    Classification,
    PiiFinding,
    classify,
    classify_categories,
    find_pii,
    redact_pii,
)
from dsl.compiler import CompiledPolicy, RuleTrace
from dsl.decision import Decision, Obligations, Redactor, RequestFacts
from dsl.declarations import AutoRollback, QuotaLimit, Quotas, Rollout, Stage
from dsl.diagnostics import Diagnostic, PolicyError
from dsl.monitor import OutputMonitor
from dsl.tools import policy_always_refuses_tool, tool_facts

__all__ = [
    "CATEGORIES",
    "CATEGORY_THRESHOLD",
    "PII_KINDS",
    "AutoRollback",
    "Classification",
    "CompiledPolicy",
    "Decision",
    "Diagnostic",
    "Obligations",
    "OutputMonitor",
    "PiiFinding",
    "PolicyError",
    "QuotaLimit",
    "Quotas",
    "Redactor",
    "RequestFacts",
    "Rollout",
    "RuleTrace",
    "Stage",
    "check",
    "classify",
    "classify_categories",
    "compile_policy",
    "find_pii",
    "policy_always_refuses_tool",
    "redact_pii",
    "tool_facts",
]
