"""MCP benchmark: the latency a governed `tools/call` adds over a direct one.

    .venv/bin/python bench/bench_mcp.py [--json out.json] [--quick]

Starts the test suite's FastMCP server (tests/mcp_e2e/mcp_server.py) and a gateway
(`python -m gateway serve`, one worker) in front of it as processes of their own, with the
example policy `mcp_tools` governing the project. Then, in the same run, alternates one `tools/call` of `echo`
straight to the server, one through `/mcp/tools` (transparent) and one through
`/policy/mcp/tools` (governed: project, policy on the arguments and the result, quota, event),
each on its own initialized MCP session, and reports p50/p99 and the median paired difference.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx2  # noqa: E402

from gateway.db import open_database  # noqa: E402
from gateway.identity.keys import IdentityStore  # noqa: E402
from gateway.identity.projects import ProjectStore  # noqa: E402

SECRET = "upstream-mcp-secret"
PROTOCOL = "2025-11-25"
ACCEPT = "application/json, text/event-stream"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Session:
    """One initialized MCP session over raw Streamable HTTP (what an SDK sends, minus the SDK)."""

    def __init__(self, client: httpx2.Client, url: str, auth: str) -> None:
        self.client, self.url = client, url
        self.headers = {"authorization": auth, "accept": ACCEPT,
                        "mcp-protocol-version": PROTOCOL}
        init = self._post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL, "capabilities": {},
            "clientInfo": {"name": "bench", "version": "0"}}})
        self.headers["mcp-session-id"] = init.headers["mcp-session-id"]
        self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        self.next_id = 1

    def _post(self, message: dict[str, Any]) -> httpx2.Response:
        response = self.client.post(self.url, json=message, headers=self.headers)
        response.raise_for_status()
        return response

    def call(self) -> float:
        self.next_id += 1
        started = time.perf_counter()
        response = self._post({"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call",
                               "params": {"name": "echo", "arguments": {"text": "benchmark"}}})
        elapsed = time.perf_counter() - started
        if '"benchmark"' not in response.text or '"isError":false' not in response.text:
            raise RuntimeError(f"unexpected answer: {response.text[:200]}")
        return elapsed


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1e3, 3),
            "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1e3, 3)}


def _gateway_key(db_path: Path) -> str:
    """An account with the Policy Gateway plan, project `proj_bench` (policy mcp_tools) and a
    key bound to it, written straight into the gateway's database."""
    db = open_database(db_path)
    try:
        store = IdentityStore(db)
        account = store.create_account("bench", "control")
        ProjectStore(db).create(project_id="proj_bench", account_id=account.id, name="bench",
                                policy_id="mcp_tools")
        return store.create_key(account.id, project_id="proj_bench")[1]
    finally:
        db.conn.close()


def measure(rounds: int) -> dict[str, Any]:
    upstream_port, gateway_port = _free_port(), _free_port()
    upstream = f"http://127.0.0.1:{upstream_port}/mcp"
    gateway = f"http://127.0.0.1:{gateway_port}"
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "gateway.toml"
        config.write_text(
            f'[database]\npath = "{tmp}/gateway.db"\n[policies]\ndirectory = "{ROOT}/policies"\n'
            f'[mcp.servers.tools]\nurl = "{upstream}"\n'
            f'headers = {{ authorization = "Bearer {SECRET}" }}\n')
        key = _gateway_key(Path(tmp) / "gateway.db")
        processes = [
            subprocess.Popen([sys.executable, str(ROOT / "tests" / "mcp_e2e" / "mcp_server.py"),
                              str(upstream_port), tmp], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL),
            subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config),
                              "--port", str(gateway_port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL),
        ]
        try:
            _wait_for(upstream)
            _wait_for(gateway + "/healthz")
            with httpx2.Client(timeout=30) as client:
                sessions = {
                    "direct": Session(client, upstream, f"Bearer {SECRET}"),
                    "transparent": Session(client, gateway + "/mcp/tools", f"Bearer {key}"),
                    "governed": Session(client, gateway + "/policy/mcp/tools", f"Bearer {key}"),
                }
                for session in sessions.values():  # warm up connections and caches
                    for _ in range(20):
                        session.call()
                samples: dict[str, list[float]] = {name: [] for name in sessions}
                for _ in range(rounds):
                    for name, session in sessions.items():
                        samples[name].append(session.call())
        finally:
            for process in processes:
                process.terminate()
                process.wait(10)
    report: dict[str, Any] = {name: percentiles(values) for name, values in samples.items()}
    for name in ("transparent", "governed"):
        paired = [a - b for a, b in zip(samples[name], samples["direct"], strict=True)]
        report[f"{name}_added_p50_ms"] = round(
            (statistics.median(samples[name]) - statistics.median(samples["direct"])) * 1e3, 3)
        report[f"{name}_paired_median_ms"] = round(statistics.median(paired) * 1e3, 3)
    report["rounds"] = rounds
    return report


def _wait_for(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx2.get(url, timeout=1)
            return
        except httpx2.TransportError:
            if time.monotonic() > deadline:
                raise RuntimeError("the MCP server did not start") from None
            time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--quick", action="store_true", help="50 rounds instead of 500")
    args = parser.parse_args()
    report = measure(50 if args.quick else 500)
    for name in ("direct", "transparent", "governed"):
        print(f"{name:12s} p50 {report[name]['p50_ms']:.3f} ms  p99 {report[name]['p99_ms']:.3f} ms")
    for name in ("transparent", "governed"):
        print(f"{name} adds p50 {report[f'{name}_added_p50_ms']:+.3f} ms "
              f"(median of paired differences {report[f'{name}_paired_median_ms']:+.3f} ms)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
