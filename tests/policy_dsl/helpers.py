"""Small builders shared by the dsl tests."""

from __future__ import annotations

import dsl


def policy(body: str, policy_id: str = "t") -> dsl.CompiledPolicy:
    return dsl.compile_policy(f'policy v1 "{policy_id}" {{\n{body}\n}}\n', filename="t.pol")


def facts(text: str = "", **fields: object) -> dsl.RequestFacts:
    fields.setdefault("last_user_text", text)
    return dsl.RequestFacts(input_text=text, **fields)  # type: ignore[arg-type]


def decide(compiled: dsl.CompiledPolicy, text: str = "", **fields: object) -> dsl.Decision:
    request = facts(text, **fields)
    return compiled.evaluate_input(request, dsl.classify(request.input_text))
