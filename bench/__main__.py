"""`python -m bench [proxy|frames|policy|quota|events|first_token|mcp|model_tools|classifiers|moderation|moderation_shared|compare|locks|soak|storage] [--options]`:
run the benchmarks and print their figures; options (e.g. `compare --quick`) go to the suites."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).parent
SUITES = {"proxy": "bench_proxy", "frames": "bench_frames", "policy": "bench_policy",
          "quota": "bench_quota", "events": "bench_events", "first_token": "bench_first_token",
          "mcp": "bench_mcp", "model_tools": "bench_model_tools", "compare": "bench_compare",
          "locks": "bench_locks", "soak": "bench_soak", "classifiers": "bench_classifiers",
          "moderation": "bench_moderation", "moderation_shared": "bench_moderation_shared",
          "storage": "bench_storage"}


def main(argv: list[str]) -> int:
    # Suite names first; from the first option on, everything goes to the suites.
    first_option = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    options = argv[first_option:]
    names = argv[:first_option] or [n for n in SUITES if n not in ("compare", "soak")]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"unknown suite(s) {unknown}; choose from {sorted(SUITES)}", file=sys.stderr)
        return 2
    failed: list[str] = []
    for name in names:
        path = HERE / f"{SUITES[name]}.py"
        if not path.exists():
            print(f"(suite {name}: {path.name} not present)")
            continue
        print(f"== {name} ==", flush=True)
        sys.argv = [str(path), *options]  # each suite parses its own options, not the names
        try:
            runpy.run_path(str(path), run_name="__main__")
        except SystemExit as exit_:  # each suite ends with sys.exit(main())
            if exit_.code:
                failed.append(name)
    if failed:
        print(f"failed suites: {failed}", file=sys.stderr)
        return 1
    return 0


sys.exit(main(sys.argv[1:]))
