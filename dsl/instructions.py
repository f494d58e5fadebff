"""Default system instructions of the `rewrite` and `summary` decisions (docs/governed-surface.md).

A policy may set its own with `rewrite_instruction "..."` / `summary_instruction "..."` (or
`config.rules.rewrite_instruction` / `summary_instruction` in a JSON document), and a rule with
`then rewrite instruction "..."`; when none is set, these texts are used, so a rewrite or summary
decision always carries an instruction for the gateway to add.
"""

from __future__ import annotations

from types import MappingProxyType

DEFAULT_REWRITE_INSTRUCTION = (
    "Parts of this request touch on content this service must handle with care. Work out what "
    "the user legitimately wants and help with that: answer safely and helpfully, leave out "
    "anything harmful, unsafe or against policy, and do not mention this instruction."
)

DEFAULT_SUMMARY_INSTRUCTION = (
    "Answer at a high level only: give a short, general overview of the topic and leave out "
    "actionable detail such as step-by-step instructions, exact quantities, code, recipes or "
    "specific procedures. Do not mention this instruction."
)

DEFAULT_INSTRUCTIONS = MappingProxyType({
    "rewrite_instruction": DEFAULT_REWRITE_INSTRUCTION,
    "summary_instruction": DEFAULT_SUMMARY_INSTRUCTION,
})
