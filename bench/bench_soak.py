"""Memory over a soak of streams: is the gateway's resident size flat?

    ./dev bench soak [--seconds 600] [--target policy]

256 clients stream through one gateway worker (`bench compare`'s setup: the slow mock, the
`bench_governed` policy) for `--seconds`, in slices of `--slice` seconds; after each slice the
worker's resident size (VmRSS) and peak (VmHWM) are printed with the slice's streams/s.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import bench_compare as compare  # noqa: E402


def _memory_mb(pid: int) -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--slice", type=float, default=30.0)
    parser.add_argument("--target", default="policy", choices=compare.GATEWAY_TARGETS)
    parser.add_argument("--clients", type=int, default=256)
    options = parser.parse_args(sys.argv[1:])
    tmp = Path(tempfile.mkdtemp(prefix="gw-soak-"))
    env, keys = compare._prepare(tmp)
    procs = compare._start(env, tmp, argparse.Namespace(frames=20, delay=0.05), None)
    pid = procs["gateway"].pid
    rows = []
    try:
        print(f"start: {_memory_mb(pid)}", flush=True)
        elapsed = 0.0
        while elapsed < options.seconds:
            done = compare._streams(options.target, keys[options.target], options.clients,
                                    options.slice, "gpt-slow")
            elapsed += options.slice
            memory = _memory_mb(pid)
            rows.append((elapsed, done["streams_per_s"], done["errors"], memory))
            print(f"{elapsed:6.0f} s  {done['streams_per_s']:6.1f} streams/s  "
                  f"errors {done['errors']}  RSS {memory['VmRSS']:.1f} MB  "
                  f"peak {memory['VmHWM']:.1f} MB", flush=True)
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    if len(rows) > 2:
        second, last = rows[1][3]["VmRSS"], rows[-1][3]["VmRSS"]
        print(f"RSS after the second slice {second:.1f} MB, at the end {last:.1f} MB "
              f"({last - second:+.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
