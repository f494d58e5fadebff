"""`python -m dsl check|fmt|test|eval`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from dsl.api import check, compile_policy, load
from dsl.diagnostics import PolicyError
from dsl.formatter import format_policy
from dsl.golden import cases_path, classification_for, facts_from_json, run_cases


class UsageError(Exception):
    """The command line names something that does not exist; the caller fixes the arguments."""


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
            if path.is_dir() and candidate.suffix == ".json" and not _policy_document(candidate):
                print(f"note: skipped {candidate}: a JSON file that is not a policy document "
                      "(no `config` or `rules`)", file=sys.stderr)
                continue
            if candidate.suffix == ".pol" or (candidate.suffix == ".json" and not pol_only):
                found.append(candidate)
    return found


def _policy_document(path: Path) -> bool:
    """Whether a `.json` file found in a directory is meant as a policy (request facts for
    `eval` may sit beside the policies). Unreadable or invalid JSON counts: check reports it."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    return isinstance(document, dict) and bool({"config", "rules"} & document.keys())


def cmd_check(args: argparse.Namespace) -> int:
    invalid = False
    for path in policy_files(args.paths):
        source = path.read_text(encoding="utf-8")
        diagnostics = check(source, filename=str(path))
        invalid |= any(d.severity == "error" for d in diagnostics)
        for diagnostic in diagnostics:
            if args.format == "json":
                print(json.dumps(diagnostic.as_dict(), ensure_ascii=False))
            else:
                print(diagnostic.render(source))
    return 1 if invalid else 0


def cmd_fmt(args: argparse.Namespace) -> int:
    status = 0
    for path in policy_files(args.paths, pol_only=True):
        source = path.read_text(encoding="utf-8")
        policy, diagnostics, _ = load(source, str(path))
        errors = [d for d in diagnostics if d.severity == "error"]
        if policy is None or errors:
            for diagnostic in errors:
                print(diagnostic.render(source), file=sys.stderr)
            status = 1
            continue
        formatted = format_policy(policy)
        if formatted == source:
            continue
        if args.check:
            print(f"would reformat {path}")
            status = 1
        else:
            path.write_text(formatted, encoding="utf-8")
            print(f"reformatted {path}")
    return status


def cmd_test(args: argparse.Namespace) -> int:
    passed = failed = 0
    for path in policy_files(args.paths):
        cases_file = cases_path(path)
        if not cases_file.exists():
            continue
        try:
            policy = compile_policy(path.read_text(encoding="utf-8"), filename=str(path))
        except PolicyError as error:
            print(f"FAIL {path}: does not compile\n{error.render()}")
            failed += 1
            continue
        cases = json.loads(cases_file.read_text(encoding="utf-8")).get("cases", [])
        for result in run_cases(policy, cases):
            if result.passed:
                passed += 1
                if args.verbose:
                    print(f"ok   {path.name}: {result.name}")
            else:
                failed += 1
                print(f"FAIL {path.name}: {result.name}")
                for problem in result.problems:
                    print(f"     {problem}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def cmd_eval(args: argparse.Namespace) -> int:
    path = Path(args.policy)
    if not path.is_file() or not Path(args.request).exists():
        raise UsageError(f"no such file: {args.request if path.is_file() else args.policy}")
    try:
        policy = compile_policy(path.read_text(encoding="utf-8"), filename=str(path))
    except PolicyError as error:
        print(error.render(), file=sys.stderr)
        return 1
    request = json.loads(Path(args.request).read_text(encoding="utf-8"))
    output = args.output_text if args.output_text is not None else request.get("output")
    facts = facts_from_json(request)
    decision, traces = policy.explain(facts, classification_for(request, facts), output)
    if args.format == "json":
        body = decision.summary() | {"message": decision.obligations.message,
                                     "instruction": decision.obligations.instruction}
        if args.explain:
            body["rules"] = [{"rule": t.rule_id, "fired": t.fired, "action": t.decision,
                              "error": t.error, "tests": [[d, r] for d, r in t.tests]}
                             for t in traces]
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return 0
    print(f"decision: {decision.decision}  reason_code: {decision.reason_code}  "
          f"stage: {decision.stage}")
    for key, value in decision.summary().items():
        if key not in ("decision", "reason_code", "stage") and value:
            print(f"{key}: {json.dumps(value, ensure_ascii=False)}")
    if decision.obligations.instruction:
        print(f"instruction: {decision.obligations.instruction}")
    if decision.obligations.message:
        print(f"message: {decision.obligations.message}")
    if args.explain:
        print("rules:")
        for trace in traces:
            verdict = "FIRED" if trace.fired else "error" if trace.error else "no"
            print(f"  {trace.rule_id}: {verdict} (then {trace.decision})")
            for description, result in trace.tests:
                shown = result if isinstance(result, str) else ("true" if result else "false")
                print(f"    {description}  ->  {shown}")
            if not trace.tests and trace.error:
                print(f"    error: {trace.error}")
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("policy-gateway")
    except PackageNotFoundError:  # a source tree that was not installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsl", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    p_check = commands.add_parser("check", help="check policy files or folders")
    p_check.add_argument("paths", nargs="+")
    p_check.add_argument("--format", choices=("text", "json"), default="text")
    p_check.set_defaults(run=cmd_check)
    p_fmt = commands.add_parser("fmt", help="rewrite .pol files in canonical form")
    p_fmt.add_argument("paths", nargs="+")
    p_fmt.add_argument("--check", action="store_true", help="only report files that would change")
    p_fmt.set_defaults(run=cmd_fmt)
    p_test = commands.add_parser("test", help="run golden cases kept beside the policies")
    p_test.add_argument("paths", nargs="+")
    p_test.add_argument("-v", "--verbose", action="store_true")
    p_test.set_defaults(run=cmd_test)
    p_eval = commands.add_parser("eval", help="decide one request")
    p_eval.add_argument("policy")
    p_eval.add_argument("--request", required=True, help="JSON file of request facts")
    p_eval.add_argument("--output-text", help="response text for output rules")
    p_eval.add_argument("--explain", action="store_true", help="say, per rule, what fired and why")
    p_eval.add_argument("--format", choices=("text", "json"), default="text")
    p_eval.set_defaults(run=cmd_eval)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
