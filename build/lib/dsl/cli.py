"""`python -m dsl check` and `python -m dsl test`: which files, what ran, what it found."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from dsl.api import check, compile_policy
from dsl.diagnostics import PolicyError
from dsl.golden import CaseResult, cases_path, load_cases, run_cases, uncovered_rules
from dsl.json_policy import is_policy_document


class UsageError(Exception):
    """The command line names something that does not exist; the caller fixes the arguments."""


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _skip_json(path: Path) -> bool:
    """A JSON file found in a folder that is not a policy document (e.g. a request file)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return False  # a broken policy document is reported by the checker, not skipped
    if is_policy_document(doc):
        return False
    print(f"note: skipped {path}: not a policy document (a JSON policy has `config` or "
          "`rules`); name the file to check it anyway", file=sys.stderr)
    return True


def policy_files(paths: Sequence[str], pol_only: bool = False) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            candidates = [path]
        else:
            raise UsageError(f"no such file or directory: {raw}")
        for candidate in candidates:
            if candidate.name.endswith(".cases.json"):
                continue
            if candidate.suffix == ".pol":
                found.append(candidate)
            elif candidate.suffix == ".json" and not pol_only and not (
                    path.is_dir() and _skip_json(candidate)):
                found.append(candidate)
    return found


def cmd_check(args: argparse.Namespace) -> int:
    files = policy_files(args.paths)
    everything = []
    for path in files:
        source = path.read_text(encoding="utf-8")
        diagnostics = check(source, filename=str(path))
        everything.extend(diagnostics)
        if args.format == "text":
            for diagnostic in diagnostics:
                print(diagnostic.render(source))
    errors = sum(d.severity == "error" for d in everything)
    warnings = len(everything) - errors
    if args.format == "json":
        print(json.dumps([d.as_dict() | {"code": d.code} for d in everything],
                         ensure_ascii=False, indent=2))
    else:
        summary = f"checked {_plural(len(files), 'policy')}, {_plural(errors, 'error')}"
        print(summary.replace("policys", "policies")
              + (f", {_plural(warnings, 'warning')}" if warnings else ""))
    return 1 if errors else 0


def _report(path: Path, results: list[CaseResult], verbose: bool) -> tuple[int, int]:
    passed = failed = 0
    for result in results:
        for warning in result.warnings:
            print(f"warn {path.name}: {result.name}: {warning}")
        if result.passed:
            passed += 1
            if verbose:
                print(f"ok   {path.name}: {result.name}")
        else:
            failed += 1
            print(f"FAIL {path.name}: {result.name}")
            for problem in result.problems:
                print(f"     {problem}")
    return passed, failed


def cmd_test(args: argparse.Namespace) -> int:
    passed = failed = 0
    without_cases: list[Path] = []
    not_fired: list[tuple[Path, list[str]]] = []
    for path in policy_files(args.paths):
        cases_file = cases_path(path)
        if not cases_file.exists():
            without_cases.append(path)
            continue
        try:
            policy = compile_policy(path.read_text(encoding="utf-8"), filename=str(path))
            cases, problems = load_cases(json.loads(cases_file.read_text(encoding="utf-8")))
        except PolicyError as error:
            print(f"FAIL {path}: does not compile\n{error.render()}")
            failed += 1
            continue
        except ValueError as error:
            print(f"FAIL {cases_file}: not valid JSON: {error}")
            failed += 1
            continue
        for problem in problems:
            print(f"FAIL {cases_file.name}: {problem}")
        failed += len(problems)
        results = run_cases(policy, cases)
        ok, bad = _report(path, results, args.verbose)
        passed, failed = passed + ok, failed + bad
        uncovered = uncovered_rules(policy, results)
        if args.coverage and uncovered:
            not_fired.append((path, uncovered))
    for path in without_cases:
        print(f"no cases: {path} (add {cases_path(path).name})")
    if args.coverage:
        for path, rules in not_fired:
            print(f"not fired: {path}: {', '.join(rules)}")
        print("coverage: every rule fired" if not not_fired else
              f"coverage: {sum(len(r) for _, r in not_fired)} rule(s) no case fired")
    print(f"{passed} passed, {failed} failed")
    empty = passed + failed == 0 and not args.allow_empty
    if empty:
        print("error: no golden cases ran; add NAME.cases.json beside each policy, or pass "
              "--allow-empty", file=sys.stderr)
    return 1 if failed or empty or not_fired else 0


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(run=cmd_check)


def add_test_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--allow-empty", action="store_true",
                        help="exit 0 even when no case ran")
    parser.add_argument("--coverage", action="store_true",
                        help="list rules that no case fired (and fail if there are any)")
    parser.set_defaults(run=cmd_test)
