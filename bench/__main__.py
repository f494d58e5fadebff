"""`python -m bench [proxy|frames|policy|quota|events|first_token|mcp|storage]`: run the benchmarks and print their figures."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).parent
SUITES = {"proxy": "bench_proxy", "frames": "bench_frames", "policy": "bench_policy",
          "quota": "bench_quota", "events": "bench_events", "first_token": "bench_first_token",
          "mcp": "bench_mcp", "classifiers": "bench_classifiers", "moderation": "bench_moderation",
          "storage": "bench_storage"}


def main(argv: list[str]) -> int:
    names = argv or list(SUITES)
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
        sys.argv = [str(path)]  # each suite parses its own options: the suite names are not
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
