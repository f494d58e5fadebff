"""Gateway overhead, all measured in one run against the same upstream:
- the compat surface, /v1/chat/completions, vs. the upstream direct and vs. a minimal relay (the
  ceiling of our stack);
- the governed surface, /policy/v1/chat/completions with the support-bot example policy, vs.
  the compat surface.

The upstream is nginx answering from memory, so it is not what is measured. The server under test
runs on CPU 0; nginx and the load generator (wrk) share CPU 1. Needs `nginx` and `wrk` on PATH
(Debian: `apt-get install nginx-light wrk`); the script says so if they are missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
UPSTREAM_PORT, RELAY_PORT, GATEWAY_PORT = 18081, 18082, 18083
DURATION = os.environ.get("BENCH_DURATION", "2s")
#: Rounds per measurement: the targets take turns, round after round, and each figure is the
#: median over the rounds, so the machine's slow drifts hit every target alike.
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SERVER_CPU, LOAD_CPU = "0", "1"

CHAT_BODY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "gpt-bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! " * 40},
                 "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 80, "total_tokens": 100},
})


def _sse_body(chunks: int = 16) -> str:
    frames = []
    for i in range(chunks):
        delta = {"role": "assistant", "content": ""} if i == 0 else {"content": f"word{i} "}
        frames.append(json.dumps({"id": "chatcmpl-bench", "object": "chat.completion.chunk",
                                  "created": 1700000000, "model": "gpt-bench",
                                  "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
    frames.append(json.dumps({"id": "chatcmpl-bench", "object": "chat.completion.chunk",
                              "created": 1700000000, "model": "gpt-bench",
                              "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    return "".join(f"data: {f}\n\n" for f in frames) + "data: [DONE]\n\n"


# On topic for the support-bot policy (its allowlist), so the governed call is allowed and
# forwarded: the benchmark measures the full governed path, classifiers and policy included.
REQUEST = {"model": "gpt-bench",
           "messages": [{"role": "user", "content": "Where is my order? It is late. " * 6}]}


def _nginx_conf(tmp: Path) -> Path:
    def quoted(text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    conf = tmp / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp};
  proxy_temp_path {tmp};
  fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp};
  scgi_temp_path {tmp};
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{UPSTREAM_PORT} reuseport;
    location /v1/chat/completions {{
      if ($http_x_bench_stream) {{ rewrite ^ /stream last; }}
      default_type application/json;
      return 200 {quoted(CHAT_BODY)};
    }}
    location = /stream {{
      internal;
      default_type text/event-stream;
      return 200 {quoted(_sse_body())};
    }}
  }}
}}
""")
    return conf


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def _lua(tmp: Path, key: str, stream: bool) -> Path:
    script = tmp / f"post-{int(stream)}-{key[-6:]}.lua"
    body = json.dumps({**REQUEST, "stream": True} if stream else REQUEST)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    if stream:
        headers["x-bench-stream"] = "1"
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body)}"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    return script


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _wrk(url: str, script: Path, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{DURATION}",
         "--latency", "-s", str(script), url],
        check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = {}
    for pct in ("50", "99"):
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert match, out
        result[f"p{pct}_ms"] = float(match.group(1)) * _UNITS[match.group(2)]
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rps, out
    result["rps"] = float(rps.group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} non-2xx responses\n{out}")
    return result


def main() -> int:
    for tool in ("nginx", "wrk", "taskset"):
        if not shutil.which(tool):
            print(f"{tool} is not installed; on Debian: apt-get install nginx-light wrk")
            return 1
    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL":
           f"http://127.0.0.1:{UPSTREAM_PORT}/v1", "ANTHROPIC_API_KEY": "sk-bench",
           "GATEWAY_DATABASE": str(tmp / "gw.db"), "RELAY_UPSTREAM": f"http://127.0.0.1:{UPSTREAM_PORT}"}
    # A key for the gateway, made the way a user makes one.
    account = json.loads(subprocess.run([PY, "-m", "gateway", "accounts", "create", "bench",
                                         "--plan", "control", "--json"], env=env, check=True,
                                        capture_output=True, text=True).stdout)
    key = json.loads(subprocess.run([PY, "-m", "gateway", "keys", "create", "--account",
                                     account["id"], "--json"], env=env, check=True, capture_output=True,
                                    text=True).stdout)["key"]
    subprocess.run([PY, "-m", "gateway", "projects", "create", "proj_bench", "--account",
                    account["id"], "--name", "Bench", "--policy", "support_bot"], env=env,
                   check=True, capture_output=True, cwd=ROOT)
    policy_key = json.loads(subprocess.run(
        [PY, "-m", "gateway", "keys", "create", "--account", account["id"], "--project",
         "proj_bench", "--json"], env=env, check=True, capture_output=True, text=True).stdout)["key"]
    procs = [
        subprocess.Popen(["taskset", "-c", LOAD_CPU, "nginx", "-c", str(_nginx_conf(tmp))],
                         stderr=subprocess.DEVNULL),
        subprocess.Popen(["taskset", "-c", SERVER_CPU, PY, "-m", "hypercorn", "-k", "trio",
                          "-b", f"127.0.0.1:{RELAY_PORT}", "bench.relay_app:app"], cwd=ROOT,
                         env=env, stderr=subprocess.DEVNULL),
        subprocess.Popen(["taskset", "-c", SERVER_CPU, PY, "-m", "gateway", "serve", "--port",
                          str(GATEWAY_PORT)], cwd=ROOT, env=env, stderr=subprocess.DEVNULL),
    ]
    try:
        for port in (UPSTREAM_PORT, RELAY_PORT, GATEWAY_PORT):
            _wait_port(port)
        rows = []
        targets = {"direct": (UPSTREAM_PORT, "/v1"), "relay": (RELAY_PORT, "/v1"),
                   "gateway": (GATEWAY_PORT, "/v1"), "policy": (GATEWAY_PORT, "/policy/v1")}
        for stream in (False, True):
            scripts = {name: _lua(tmp, policy_key if name == "policy" else key, stream)
                       for name in targets}
            for connections in (1, 32):
                urls = {name: f"http://127.0.0.1:{port}{prefix}/chat/completions"
                        for name, (port, prefix) in targets.items()}
                for name, url in urls.items():
                    _wrk(url, scripts[name], connections)  # warm-up run
                rounds: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
                for _ in range(ROUNDS):
                    for name, url in urls.items():
                        rounds[name].append(_wrk(url, scripts[name], connections))
                measured = {name: {key: statistics.median(r[key] for r in results)
                                   for key in results[0]}
                            for name, results in rounds.items()}
                rows.append((stream, connections, measured))
        _report(rows)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _report(rows: list) -> None:
    print("| mode | conc | direct p50 | relay p50 | gateway p50 | gw p99 | added p50 vs direct "
          "| added p50 vs relay | gw/direct rps | gw/relay rps |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for stream, conc, m in rows:
        d, r, g, p = m["direct"], m["relay"], m["gateway"], m["policy"]
        row = {
            "mode": "stream" if stream else "non-stream", "concurrency": conc,
            "direct": d, "relay": r, "gateway": g, "policy": p,
            "policy_added_p50_vs_compat_ms": p["p50_ms"] - g["p50_ms"],
            "throughput_policy_over_compat": p["rps"] / g["rps"],
            "added_p50_vs_direct_ms": g["p50_ms"] - d["p50_ms"],
            "added_p50_vs_relay_ms": g["p50_ms"] - r["p50_ms"],
            "added_p99_vs_direct_ms": g["p99_ms"] - d["p99_ms"],
            "throughput_gateway_over_direct": g["rps"] / d["rps"],
            "throughput_gateway_over_relay": g["rps"] / r["rps"],
        }
        results.append(row)
        print(f"| {row['mode']} | {conc} | {d['p50_ms']:.3f} ms | {r['p50_ms']:.3f} ms | "
              f"{g['p50_ms']:.3f} ms | {g['p99_ms']:.3f} ms | {row['added_p50_vs_direct_ms']:.3f} ms"
              f" | {row['added_p50_vs_relay_ms']:+.3f} ms | "
              f"{row['throughput_gateway_over_direct']:.2f} | "
              f"{row['throughput_gateway_over_relay']:.2f} |")
    print()
    print("| mode | conc | compat p50 | policy p50 | policy p99 | added p50 vs compat "
          "| policy/compat rps |")
    print("|---|---|---|---|---|---|---|")
    for row in results:
        g, p = row["gateway"], row["policy"]
        print(f"| {row['mode']} | {row['concurrency']} | {g['p50_ms']:.3f} ms | "
              f"{p['p50_ms']:.3f} ms | {p['p99_ms']:.3f} ms | "
              f"{row['policy_added_p50_vs_compat_ms']:+.3f} ms | "
              f"{row['throughput_policy_over_compat']:.2f} |")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "proxy.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
