"""The product's docs and help texts stand on their own: no doc, `--help` text or message shown
to users points at a document users do not have (an internal contract, its sections, a tracker
issue, a path outside the repository), nor does any comment or docstring of the code, every
relative link of the docs resolves inside the repository, and the error reference names every error
code the gateway answers with."""

from __future__ import annotations

import argparse
import ast
import contextlib
import inspect
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import gateway.errors
from dsl.__main__ import main as dsl_main
from gateway.cli.main import _parser as gateway_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: What a reference to something outside the repository looks like. (A section of a public
#: standard, "RFC 7518 §3.2", is fine; a bare "§5.3" is a section of a document users lack.)
OUTSIDE = re.compile(r"\bSPEC\b|(?<!\d )§\s*\d|\bshared/|/work/|\bissues? #?\d+\b|your-org",
                     re.IGNORECASE)
LINK = re.compile(r"\]\(([^)\s]+)\)")
#: The internal contract (in capitals: "the spec" of a public API is fine) and its sections.
CONTRACT = re.compile(r"\bSPEC\b|(?<!\d )§\s*\d")
#: Tracker issues and paths outside the repository.
ELSEWHERE = re.compile(r"\bshared/|/work/|\bissues? #?\d+\b|your-org", re.IGNORECASE)
#: Where the code lives (the package, the policy language, its grammar, benchmarks and tests).
CODE_FOLDERS = ("gateway", "dsl", "grammar", "bench", "tests")
#: Source files, held to both patterns; data files (recorded texts, expected outputs) only to
#: CONTRACT, since their prose may say "issues 9" of a card network.
SOURCE_SUFFIXES = {".py", ".lark", ".pol", ".toml", ".md", ".txt"}


def _offending(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if OUTSIDE.search(line)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_refer_to_nothing_outside_the_repository(doc: Path):
    text = doc.read_text(encoding="utf-8")
    assert _offending(text) == []
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "#", "mailto:")):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        assert path.exists() and path.is_relative_to(ROOT), f"{doc.name}: broken link {target}"


def _subparsers(parser: argparse.ArgumentParser, trail: tuple[str, ...] = ()
                ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield trail, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subparsers(sub, (*trail, name))


def test_every_gateway_help_text_stands_on_its_own():
    helps = {" ".join(trail): sub.format_help() for trail, sub in _subparsers(gateway_parser())}
    assert {"serve", "check-config", "config-schema", "admin-token", "events query"} <= set(helps)
    for command, text in helps.items():
        assert _offending(text) == [], command
    # It used to say the output was JSON; it is text unless --json (or -q) is given.
    assert "Output is text on stdout (`--json` for JSON" in helps[""]


def test_the_configuration_schema_and_the_openapi_document_stand_on_their_own():
    """Both are shown to users (editors show the schema's descriptions, /openapi.json its)."""
    from gateway.admin.openapi import build_document
    from gateway.config.schema import json_schema

    assert _offending(json.dumps(json_schema(), indent=1)) == []
    assert _offending(json.dumps(build_document(), indent=1)) == []


def _dsl_help(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        dsl_main([*args, "--help"])
    return out.getvalue()


def test_every_dsl_help_text_stands_on_its_own():
    for command in ((), ("check",), ("fmt",), ("test",), ("eval",)):
        text = _dsl_help(*command)
        assert text.startswith("usage: python -m dsl")
        assert _offending(text) == [], command


def _user_facing_strings(path: Path) -> Iterator[tuple[int, str]]:
    """String constants of a module that are not docstrings: messages, help texts, schema
    descriptions. (Docstrings and comments are for the code's readers.)"""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in docstrings):
            yield node.lineno, node.value


def test_messages_shown_to_users_stand_on_their_own():
    found = []
    for folder in ("gateway", "dsl", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for line, text in _user_facing_strings(path):
                if _offending(text):
                    found.append(f"{path.relative_to(ROOT)}:{line}: {text[:80]!r}")
    # Help texts printed from module docstrings (`description=__doc__`) too.
    for module in ("gateway/cli/main.py", "dsl/__main__.py", "bench/__main__.py",
                   *(str(p.relative_to(ROOT)) for p in (ROOT / "bench").glob("bench_*.py"))):
        docstring = ast.get_docstring(ast.parse((ROOT / module).read_text())) or ""
        found += [f"{module}: {line}" for line in _offending(docstring)]
    assert found == []


def _code_files() -> Iterator[Path]:
    for folder in CODE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*")):
            if (path.is_file() and "__pycache__" not in path.parts
                    and path != Path(__file__).resolve()):
                yield path


def test_the_code_refers_to_nothing_outside_the_repository():
    """Comments and docstrings stand on their own too: they point at docs/*.md, never at the
    internal contract, its sections or a tracker issue (this module names them to find them)."""
    found = []
    for path in _code_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # a binary fixture holds no prose
        source = path.suffix in SOURCE_SUFFIXES
        found += [f"{path.relative_to(ROOT)}:{number}: {line.strip()[:80]}"
                  for number, line in enumerate(text.splitlines(), 1)
                  if CONTRACT.search(line) or (source and ELSEWHERE.search(line))]
    assert found == []
    assert any(path.name == "policy.lark" for path in _code_files())  # the grammar is scanned


def test_the_error_reference_lists_every_error_code():
    reference = (ROOT / "docs" / "reference.md").read_text()
    rows = set(re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \|", reference, re.M))
    for _, error in inspect.getmembers(gateway.errors, inspect.isclass):
        if issubclass(error, gateway.errors.GatewayError):
            assert (str(error.status), error.code) in rows, error.__name__


def test_versions_are_printed():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        gateway_parser().parse_args(["--version"])
    assert re.fullmatch(r"python -m gateway \S+\n", out.getvalue())
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        dsl_main(["--version"])
    assert re.fullmatch(r"python -m dsl \S+\n", out.getvalue())
