"""The entry points the gateway calls: `check` and `compile_policy` (docs/dsl-interface.md)."""

from __future__ import annotations

import json
from typing import Any

from dsl import ast
from dsl.checker import check_ast
from dsl.compiler import CompiledPolicy
from dsl.diagnostics import Diagnostic, DiagnosticSink, PolicyError
from dsl.json_policy import translate
from dsl.parser import parse_source

PolicyInput = str | dict[str, Any]


def _looks_like_json(text: str) -> bool:
    return text.lstrip().startswith(("{", "["))


def load(text_or_doc: PolicyInput, filename: str = "<policy>",
         ) -> tuple[ast.PolicyAst | None, list[Diagnostic], str]:
    """Parse and check; returns the AST (None if unusable), sorted diagnostics, source text."""
    sink = DiagnosticSink(filename)
    policy: ast.PolicyAst | None = None
    if isinstance(text_or_doc, dict):
        source = json.dumps(text_or_doc, indent=2, ensure_ascii=False)
        policy = translate(text_or_doc, source, sink)
    elif not isinstance(text_or_doc, str):
        sink.error(1, 1, f"a policy is .pol text or a JSON object, not {type(text_or_doc).__name__}",
                   "pass the file's text or the parsed JSON document", code="policy-input-type")
        return None, sink.sorted(), ""
    elif _looks_like_json(text_or_doc):
        source = text_or_doc
        try:
            doc = json.loads(text_or_doc)
        except json.JSONDecodeError as error:
            sink.error(error.lineno, error.colno, f"invalid JSON: {error.msg}",
                       "a JSON policy document is one object; check commas and quotes",
                       code="invalid-json")
            return None, sink.sorted(), source
        if not isinstance(doc, dict):
            sink.error(1, 1, "a JSON policy document must be an object", "wrap it in { ... }",
                       code="json-not-an-object")
            return None, sink.sorted(), source
        policy = translate(doc, source, sink)
    else:
        source = text_or_doc
        policy = parse_source(source, sink)
    if policy is not None:
        check_ast(policy, sink)
    return policy, sink.sorted(), source


def check(text_or_doc: PolicyInput, filename: str = "<policy>") -> list[Diagnostic]:
    """Every diagnostic (errors and warnings) for a policy; never raises."""
    try:
        return load(text_or_doc, filename)[1]
    except RecursionError:
        return [Diagnostic(filename, 1, 1, "error", "policy nested too deeply",
                           "split deeply nested conditions into several rules",
                           code="nested-too-deeply")]


def compile_policy(text_or_doc: PolicyInput, filename: str = "<policy>") -> CompiledPolicy:
    """Check and compile; raises PolicyError carrying every diagnostic when there is an error."""
    try:
        policy, diagnostics, source = load(text_or_doc, filename)
    except RecursionError:
        raise PolicyError(check(text_or_doc, filename)) from None
    if policy is None or any(d.severity == "error" for d in diagnostics):
        raise PolicyError(diagnostics, source)
    return CompiledPolicy(policy, source)
