"""First-token delay on a slow upstream: what an output rule adds to the time to the first token.

One run, the same upstream for both surfaces: a local mock provider (tests/mock_upstream.py)
streams a ~110-character answer in small frames, sleeping between frames (`BENCH_FRAME_DELAY`
seconds, 0.05 by default), through the real gateway (`python -m gateway serve`):
- `/v1`: the transparent proxy;
- `/policy`: a project with the `pii_redaction` example policy, whose output rule redacts e-mail
  addresses: the output monitor sees every delta;
- `/policy`, no output rule: a project with `support_bot` (what /policy costs without a monitor).

Each figure is the median over `BENCH_ROUNDS` requests per surface, taken in turns. Two ways of
cutting the answer into frames:
- `words`: each frame ends after a word and its space (the text so far cannot begin a match);
- `tokens`: each frame is a word with its leading space, as model tokenizers cut text (the last
  word of the text so far could still grow into an e-mail address until the next frame).

`BENCH_GATEWAY_TREE=/path/to/another/checkout` runs that tree's gateway instead (for a
before/after comparison in one sitting, e.g. an export of the previous commit).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.mock_upstream import SCENARIO_HEADER, MockUpstream  # noqa: E402

PY = sys.executable
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
FRAME_DELAY = float(os.environ.get("BENCH_FRAME_DELAY", "0.05"))
ANSWER = ("Your order shipped on Monday and should arrive by Thursday. Tracking is live "
          "in your account, under Orders.")
CUTS = {"words": re.findall(r"\S+\s*", ANSWER), "tokens": re.findall(r"\s*\S+", ANSWER)}
PROMPT = "Where is my order?"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def _cli(env: dict[str, str], tree: Path, *args: str) -> dict[str, str]:
    out = subprocess.run([PY, "-m", "gateway", *args, "--json"], env=env, cwd=tree, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out) if out.strip() else {}


def _keys(env: dict[str, str], tree: Path) -> dict[str, str]:
    """A compat key, and a key of a project for each policy: `pii_redaction` (an output rule)
    and `support_bot` (none: what /policy costs before any output rule)."""
    account = _cli(env, tree, "accounts", "create", "bench", "--plan", "control")["id"]
    keys = {"v1": _cli(env, tree, "keys", "create", "--account", account)["key"]}
    for target, policy in (("policy", "pii_redaction"), ("policy_no_output", "support_bot")):
        subprocess.run([PY, "-m", "gateway", "projects", "create", f"proj_{target}",
                        "--account", account, "--name", target, "--policy", policy], env=env,
                       cwd=tree, check=True, capture_output=True)
        keys[target] = _cli(env, tree, "keys", "create", "--account", account, "--project",
                            f"proj_{target}")["key"]
    return keys


def first_token(client: httpx2.Client, url: str, key: str, chunks: list[str]) -> tuple[float, str]:
    """Seconds from sending the request to the first non-empty text delta, and the text."""
    scenario = json.dumps({"mode": "slow", "delay": FRAME_DELAY, "chunks": chunks})
    body = {"model": "gpt-bench", "stream": True,
            "messages": [{"role": "user", "content": PROMPT}]}
    headers = {"authorization": f"Bearer {key}", SCENARIO_HEADER: scenario}
    started = time.perf_counter()
    first: float | None = None
    text = []
    with client.stream("POST", url, json=body, headers=headers) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            content = (choices[0].get("delta") or {}).get("content")
            if content:
                first = first if first is not None else time.perf_counter() - started
                text.append(content)
    assert first is not None, "no text arrived"
    return first, "".join(text)


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="gw-first-token-"))
    port = _free_port()
    with MockUpstream() as upstream:
        config = tmp / "gateway.toml"
        config.write_text(
            f'[database]\npath = "{tmp / "gw.db"}"\n\n'
            '[upstream]\nforward_headers = ["x-mock-scenario"]\n\n'  # the mock's script
            f'[providers.openai]\nkind = "openai"\nbase_url = "{upstream.url}/v1"\n'
            'api_key = "sk-bench"\n')
        env = {**os.environ, "GATEWAY_CONFIG": str(config)}
        tree = Path(os.environ.get("BENCH_GATEWAY_TREE") or ROOT)
        env["PYTHONPATH"] = str(tree)  # `-m` also puts the working directory first: both
        keys = _keys(env, tree)
        server = subprocess.Popen([PY, "-m", "gateway", "serve", "--port", str(port)], cwd=tree,
                                  env=env, stderr=subprocess.DEVNULL)
        try:
            _wait_port(port)
            rows = _measure(f"http://127.0.0.1:{port}", keys)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
    _report(rows, str(tree))
    return 0


def _measure(base: str, keys: dict[str, str]) -> dict[str, dict[str, float]]:
    targets = {name: (base + ("/v1" if name == "v1" else "/policy/v1") + "/chat/completions",
                      key) for name, key in keys.items()}
    rows: dict[str, dict[str, float]] = {}
    with httpx2.Client(timeout=30) as client:
        for cut, chunks in CUTS.items():
            samples: dict[str, list[float]] = {name: [] for name in targets}
            for round_ in range(ROUNDS + 1):
                for name, (url, key) in targets.items():
                    seconds, text = first_token(client, url, key, chunks)
                    assert text == ANSWER, (name, text)
                    if round_:  # the first round warms up connections and caches
                        samples[name].append(seconds * 1000)
            rows[cut] = {name: statistics.median(values) for name, values in samples.items()}
    return rows


def _report(rows: dict[str, dict[str, float]], tree: str) -> None:
    print(f"gateway tree: {tree}; answer {len(ANSWER)} characters; frame delay "
          f"{FRAME_DELAY * 1000:.0f} ms; median of {ROUNDS} rounds")
    print("| frames | count | /v1 first token | /policy, no output rule | /policy, output PII "
          "rule | added over /v1 | added by the output rule |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for cut, row in rows.items():
        print(f"| {cut} | {len(CUTS[cut])} | {row['v1']:.1f} ms | "
              f"{row['policy_no_output']:.1f} ms | {row['policy']:.1f} ms | "
              f"{row['policy'] - row['v1']:+.1f} ms | "
              f"{row['policy'] - row['policy_no_output']:+.1f} ms |")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "first_token.json").write_text(json.dumps({"tree": tree, "rows": rows}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
