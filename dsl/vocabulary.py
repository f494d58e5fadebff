"""The names a policy may use: texts, request fields, settings, limits.  Shared by checker and
compiler so both always agree on what a name means."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from dsl.decision import RequestFacts

TEXTS = ("input", "last_user", "system", "tool_arguments", "output", "tool_result")
#: Texts known only once the answer is: rules reading them are decided at the output stage.
OUTPUT_TEXTS = frozenset({"output", "tool_result"})

# field name -> (type, getter).  A getter returning None means "missing": the rule cannot be
# evaluated and the policy's on_error applies.
FIELDS: dict[str, tuple[str, Callable[[RequestFacts], Any]]] = {
    "model": ("string", lambda f: f.model or None),
    "surface": ("string", lambda f: f.surface),
    "target": ("string", lambda f: f.effective_target),
    "user": ("string", lambda f: f.policy_user),
    "project": ("string", lambda f: f.project_id),
    "message_count": ("number", lambda f: f.message_count),
    "input_tokens": ("number", lambda f: f.estimated_input_tokens),
    "max_output_tokens": ("number", lambda f: f.max_output_tokens),
    "has_tools": ("bool", lambda f: f.has_tools),
    "stream": ("bool", lambda f: f.stream),
    "tool.name": ("string", lambda f: f.tool_name),
    "tool.server": ("string", lambda f: f.tool_server),
}
#: Fields of the one tool call being decided. Without one (an ordinary model request, or a
#: model-issued call for `tool.server`) every test of them is false, never "missing": tool
#: rules must not fire, nor trip `on_error`, on requests that carry no tool call. Their values
#: are identifiers, compared folded (case, width, look-alike letters: dsl/tools.py).
TOOL_FIELDS = frozenset({"tool.name", "tool.server"})
#: Fields known before any text is read, the same for every call of one tool by one caller:
#: a refusing rule that tests nothing else refuses that tool always (tools/list hides it).
STATIC_FIELDS = frozenset({"tool.name", "tool.server", "target", "user", "project"})

STAGE_MODES = ("shadow", "canary", "enforced")
ROLLBACK_NUMBERS = ("threshold_pct", "min_requests", "window_minutes", "cooldown_minutes")
QUOTA_SUBJECTS = ("project", "user")
#: `tool_calls` counts governed MCP tool calls only, and they count toward no other unit.
QUOTA_UNITS = ("requests", "tokens", "tool_calls")
# As written in a policy -> the quota window name (docs/quotas.md).
QUOTA_WINDOWS = {"minute": "minute", "hour": "hour", "day": "daily", "week": "weekly",
                 "month": "monthly", "daily": "daily", "weekly": "weekly", "monthly": "monthly"}

REASON_CODE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")
POLICY_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,127}$")
#: A URL, an e-mail address, or the name of an escalation target the gateway's operator
#: configured (the gateway checks names and URLs against its configuration when it loads).
ESCALATION_PATH = re.compile(r"^(https?://\S+|mailto:\S+@\S+|[^@\s]+@[^@\s]+\.[^@\s]+"
                             r"|[A-Za-z][A-Za-z0-9_.-]{0,63})$")

MAX_TERMS_PER_LIST = 100_000
MAX_TERM_LENGTH = 200
MAX_PATTERN_LENGTH = 1_000
MAX_RULES = 2_000
REGEX_FLAGS = "ims"

# Characters of output the stream monitor holds back for tests it cannot bound exactly.
UNBOUNDED_PATTERN_WINDOW = 256
PII_WINDOW = 256
CATEGORY_WINDOW = 512
