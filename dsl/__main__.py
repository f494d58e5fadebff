"""`python -m dsl check|fmt|test|eval`: check, format, test and try out policies."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from dsl.api import compile_policy, load
from dsl.cli import UsageError, add_check_arguments, add_test_arguments, policy_files
from dsl.compiler import RuleTrace
from dsl.diagnostics import PolicyError
from dsl.formatter import format_policy
from dsl.golden import classification_for, facts_from_json, output_of


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
    output = args.output_text if args.output_text is not None else output_of(request)
    facts = facts_from_json(request)
    decision, traces = policy.explain(facts, classification_for(request, facts), output)
    if args.format == "json":
        body = decision.summary() | {"message": decision.obligations.message,
                                     "instruction": decision.obligations.instruction}
        if args.explain:
            body["rules"] = [{"rule": t.rule_id, "fired": t.fired, "action": t.decision,
                              "stage": t.stage, "note": t.note, "error": t.error,
                              "tests": [[d, r] for d, r in t.tests]}
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
            print(f"  {trace.rule_id}: {_verdict(trace)} (then {trace.decision})")
            for description, result in trace.tests:
                shown = result if isinstance(result, str) else ("true" if result else "false")
                print(f"    {description}  ->  {shown}")
            if not trace.tests and trace.error:
                print(f"    error: {trace.error}")
    return 0


def _verdict(trace: RuleTrace) -> str:
    if trace.stage is None:
        return f"undecided: {trace.note}"
    if trace.error:
        return f"error at {trace.stage}"
    return f"FIRED at {trace.stage}" if trace.fired else f"no, decided at {trace.stage}"
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
    add_check_arguments(p_check)
    p_fmt = commands.add_parser("fmt", help="rewrite .pol files in canonical form")
    p_fmt.add_argument("paths", nargs="+")
    p_fmt.add_argument("--check", action="store_true", help="only report files that would change")
    p_fmt.set_defaults(run=cmd_fmt)
    p_test = commands.add_parser("test", help="run golden cases kept beside the policies")
    add_test_arguments(p_test)
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
