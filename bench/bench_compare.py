"""`./dev bench compare [--quick]`: the performance table of docs/performance.md in one run.

Four targets, each cell the median over interleaved rounds (the targets take turns inside every
round, in a rotating order, so the machine's drifts hit all alike) and each gateway figure also as
a ratio to the relay of the same run:
- **relay**: `bench/relay_app.py`, hypercorn (trio) + httpx2 with no gateway logic;
- **/v1**: the gateway's transparent proxy;
- **/policy**: the governed surface with `bench_governed` (a 100-term denylist, PII redaction on
  input and output, secrets and 7 categories);
- **/policy + quota**: the same policy in a project with a budget (admission and settlement on
  every request).

Measures: RPS and p50/p99 of chat and chat_stream at c=1 and c=16 (wrk against an nginx mock);
256 concurrent slow streams (`bench/slow_upstream.py`, `bench/stream_client.py`): streams/s,
first-token p50/p99, errors and listen-queue overflows; first token added on a slow upstream
(over the mock reached directly); peak RSS. The load generators and mocks run on CPU 0, the
systems under test on CPU 1, one worker each. nginx-light and wrk are installed with apt-get
when missing. LiteLLM and Portkey are not driven by this script; it says so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_proxy import _lua, _nginx_conf, _wait_port  # noqa: E402
from bench.compare_report import report  # noqa: E402

PY = sys.executable
NGINX, RELAY, GATEWAY, SLOW, FIRST, BASELINE = 18081, 18082, 18083, 18084, 18085, 18086
LOAD_CPU, SUT_CPU = "0", "1"
TARGETS = ("relay", "v1", "policy", "policy_quota")
#: The gateway's targets; with `--baseline TREE` also as `NAME@base`, served by that tree.
GATEWAY_TARGETS = ("v1", "policy", "policy_quota")
BIG = 10**12


def _denylist() -> str:
    terms = [f"bench forbidden phrase {n:03d}" for n in range(100)]
    return ", ".join(json.dumps(t) for t in terms)


GOVERNED_POLICY = f"""policy v1 "bench_governed" {{
  name "Benchmark: denylist, PII both ways, secrets, categories"
  default allow
  on_error refuse
  denylist banned = [{_denylist()}]

  rule banned_terms {{
    when input contains any of banned
    then refuse reason BANNED
  }}
  rule redact_contacts {{
    when pii email or pii phone
    then allow
    redact pii email, phone
  }}
  rule no_secrets {{
    when pii secret
    then refuse reason SECRET
  }}
  rule harmful {{
    when category "hate" or category "harassment" or category "violence" or category "illicit"
      or category "sexual" or category "self-harm" or category "violence/graphic"
    then refuse reason HARMFUL
  }}
  rule redact_output_contacts {{
    when pii email in output
    then allow
    redact pii email
  }}
}}
"""


def _apt_install_missing() -> None:
    missing = [tool for tool in ("nginx", "wrk") if not shutil.which(tool)]
    if missing:
        print(f"installing {missing} (Debian packages nginx-light, wrk)", flush=True)
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "nginx-light", "wrk"],
                       check=True, stdout=subprocess.DEVNULL)


def _cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    out = subprocess.run([PY, "-m", "gateway", *args, "--json"], env=env,
                         cwd=env["PYTHONPATH"], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out) if out.strip() else {}


def _prepare(tmp: Path, tree: Path = ROOT, name: str = "gw"
             ) -> tuple[dict[str, str], dict[str, str]]:
    """The configuration and data in `tmp` of the gateway of `tree`; its environment and a key
    per target."""
    policies = tmp / "policies"
    if not policies.exists():
        policies.mkdir()
        for path in (ROOT / "policies").glob("*.pol"):
            shutil.copy(path, policies)
        (policies / "bench_governed.pol").write_text(GOVERNED_POLICY)
    config = tmp / f"{name}.toml"
    config.write_text(
        f'[database]\npath = "{tmp / name}.db"\n[policies]\ndirectory = "{policies}"\n'
        '[upstream]\nforward_headers = ["x-bench-stream"]\n'  # the nginx mock's stream switch
        f'[providers.openai]\nkind = "openai"\nbase_url = "http://127.0.0.1:{NGINX}/v1"\n'
        'api_key = "sk-bench"\n'
        f'[providers.slow]\nkind = "openai"\nbase_url = "http://127.0.0.1:{SLOW}/v1"\n'
        'api_key = "sk-bench"\n'
        f'[providers.first]\nkind = "openai"\nbase_url = "http://127.0.0.1:{FIRST}/v1"\n'
        'api_key = "sk-bench"\n'
        '[[routes]]\nmodel = "gpt-slow"\nprovider = "slow"\n'
        '[[routes]]\nmodel = "gpt-first"\nprovider = "first"\n')
    env = {**os.environ, "GATEWAY_CONFIG": str(config), "PYTHONPATH": str(tree),
           "RELAY_UPSTREAM": f"http://127.0.0.1:{NGINX}"}
    env.pop("OPENAI_BASE_URL", None)
    account = _cli(env, "accounts", "create", "bench", "--plan", "control")["id"]
    keys = {"relay": "unused", "v1": _cli(env, "keys", "create", "--account", account)["key"]}
    budget = json.dumps({"requests": {"daily": BIG}, "tokens": {"daily": BIG}})
    for target, quota in (("policy", []), ("policy_quota", ["--budget", budget])):
        subprocess.run([PY, "-m", "gateway", "projects", "create", f"proj_{target}", "--account",
                        account, "--name", target, "--policy", "bench_governed", *quota],
                       env=env, cwd=tree, check=True, capture_output=True)
        keys[target] = _cli(env, "keys", "create", "--account", account, "--project",
                            f"proj_{target}")["key"]
    return env, keys


def _url(target: str, model: str = "") -> str:
    """The chat completions URL of `target`; the relay reaches the slow mocks by path."""
    if target == "relay":
        via = {"gpt-slow": f"/via/{SLOW}", "gpt-first": f"/via/{FIRST}"}.get(model, "")
        return f"http://127.0.0.1:{RELAY}{via}/v1/chat/completions"
    if target == "direct":
        port = FIRST if model == "gpt-first" else SLOW
        return f"http://127.0.0.1:{port}/v1/chat/completions"
    name, _, tree = target.partition("@")
    prefix = "/v1" if name == "v1" else "/policy/v1"
    return f"http://127.0.0.1:{BASELINE if tree else GATEWAY}{prefix}/chat/completions"


def _wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, float]:
    from bench.bench_proxy import _UNITS

    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
         "--latency", "-s", str(script), url], check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = {}
    for pct in ("50", "99"):
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert match, out
        result[f"p{pct}_ms"] = float(match.group(1)) * _UNITS[match.group(2)]
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rps, out
    result["rps"] = float(rps.group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = float(bad.group(1)) if bad else 0.0
    return result


def _listen_overflows() -> int:
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(table.get("ListenOverflows", 0))
    return 0


def _streams(target: str, key: str, clients: int, seconds: float, model: str
             ) -> dict[str, Any]:
    before = _listen_overflows()
    out = subprocess.run(["taskset", "-c", LOAD_CPU, PY, "-m", "bench.stream_client",
                          _url(target, model), key, str(clients), str(seconds), model],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out)
    result["listen_overflows"] = _listen_overflows() - before
    return result


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _round(order: list[str], keys: dict[str, str], scripts: dict[tuple[str, bool], Path],
           options: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """One round: every measure, the targets taking turns in `order`."""
    cells: dict[str, dict[str, Any]] = {target: {} for target in order}
    for stream in (False, True):
        for connections in (1, 16):
            for target in order:
                measured = _wrk(_url(target), scripts[target, stream], connections,
                                options.duration)
                cells[target][f"{'chat_stream' if stream else 'chat'}_c{connections}"] = measured
    for target in ["direct", *order]:
        first = _streams(target, keys.get(target, "unused"), 1, options.first_seconds,
                         "gpt-first")
        cells.setdefault(target, {})["first_token_ms"] = first["first_token_p50_ms"]
        cells[target]["first_token_errors"] = first["errors"]
    for target in order:
        cells[target]["streams"] = _streams(target, keys[target], options.clients,
                                            options.stream_seconds, "gpt-slow")
    return cells


def _start(env: dict[str, str], tmp: Path, options: argparse.Namespace,
           baseline: dict[str, str] | None) -> dict[str, subprocess.Popen[bytes]]:
    quiet = subprocess.DEVNULL
    load = ["taskset", "-c", LOAD_CPU]
    sut = ["taskset", "-c", SUT_CPU]
    procs = {
        "nginx": subprocess.Popen([*load, "nginx", "-c", str(_nginx_conf(tmp))], stderr=quiet),
        "slow": subprocess.Popen([*load, PY, "-m", "bench.slow_upstream", str(SLOW),
                                  str(options.frames), str(options.delay)], cwd=ROOT, env=env),
        "first": subprocess.Popen([*load, PY, "-m", "bench.slow_upstream", str(FIRST), "6",
                                   "0.05"], cwd=ROOT, env=env),
        "relay": subprocess.Popen([*sut, PY, "-m", "hypercorn", "-k", "trio", "--backlog", "4096",
                                   "-b", f"127.0.0.1:{RELAY}", "bench.relay_app:app"], cwd=ROOT,
                                  env=env, stderr=quiet),
        "gateway": subprocess.Popen([*sut, PY, "-m", "gateway", "serve", "--port", str(GATEWAY)],
                                    cwd=ROOT, env=env, stderr=quiet),
    }
    ports = [NGINX, SLOW, FIRST, RELAY, GATEWAY]
    if baseline is not None:  # the other tree's gateway, as that tree serves it
        procs["baseline"] = subprocess.Popen(
            [*sut, PY, "-m", "gateway", "serve", "--port", str(BASELINE)],
            cwd=baseline["PYTHONPATH"], env=baseline, stderr=quiet)
        ports.append(BASELINE)
    for port in ports:
        _wait_port(port)
    return procs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of short runs (~1 min)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--stream-seconds", type=float, default=8.0)
    parser.add_argument("--first-seconds", type=float, default=1.5)
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--frames", type=int, default=20, help="frames per slow stream")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds between frames")
    parser.add_argument("--baseline", metavar="TREE", type=Path,
                        help="another checkout whose gateway is measured too (NAME@base)")
    options = parser.parse_args(sys.argv[1:])
    if options.quick:
        options.rounds, options.duration, options.stream_seconds = 1, 2.0, 5.0
    _apt_install_missing()
    tmp = Path(tempfile.mkdtemp(prefix="gw-compare-"))
    env, keys = _prepare(tmp)
    targets = list(TARGETS)
    baseline = None
    if options.baseline is not None:
        baseline, base_keys = _prepare(tmp, options.baseline.resolve(), "base")
        keys.update({f"{name}@base": base_keys[name] for name in GATEWAY_TARGETS})
        targets += [f"{name}@base" for name in GATEWAY_TARGETS]
    procs = _start(env, tmp, options, baseline)
    try:
        scripts = {(target, stream): _lua(tmp, keys[target], stream)
                   for target in targets for stream in (False, True)}
        for target in targets:  # warm-up: connections, caches, the policy's first compile
            _wrk(_url(target), scripts[target, True], 4, 1.0)
        rounds = []
        for index in range(options.rounds):
            shift = index % len(targets)
            rounds.append(_round(targets[shift:] + targets[:shift], keys, scripts, options))
            print(f"round {index + 1}/{options.rounds} done", file=sys.stderr, flush=True)
        rss = {name: _peak_rss_mb(proc.pid) for name, proc in procs.items()
               if name in ("relay", "gateway", "baseline")}
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"peers: LiteLLM and Portkey are not driven by this script "
          f"({'litellm found' if shutil.which('litellm') else 'neither installed'}); "
          f"{options.rounds} round(s), {options.clients} streams of {options.frames} frames "
          f"{options.delay * 1000:.0f} ms apart")
    report(rounds, targets, rss, options, ROOT / "bench" / "results" / "compare.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
