"""Per-frame cost of the governed stream: what the gateway spends on one SSE frame.

Measured in one run, on the same recorded chat-completion stream:
- `relay`: the compat surface's work per frame (parse the frame, decode its JSON, forward the
  original bytes);
- `governed`: the policy surface's work per frame with a policy without output rules (the
  above plus the `policy` object spliced into every frame);
- `monitored`: the same with a policy that has output rules (the output monitor runs on every
  text delta and the frame is re-encoded with the released text);
- `monitored_disguised`: the same on text with an accent and a zero-width space in every delta
  (the monitor's non-ASCII path: folding and hold-back counting per character).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dsl  # noqa: E402
from gateway.adapters import CHAT  # noqa: E402
from gateway.policy.governance import Governance  # noqa: E402
from gateway.policy.stream import StreamGovernor  # noqa: E402
from gateway.upstream.sse import SSEParser  # noqa: E402

FRAMES = 200
ROUNDS = 30


def _stream(disguised: bool = False) -> bytes:
    frames = []
    for i in range(FRAMES):
        content = f"wo\u0301rd{i} and\u200b more " if disguised else f"word{i} and more "
        frames.append(orjson.dumps({
            "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "gpt-bench", "system_fingerprint": None,
            "choices": [{"index": 0, "delta": {"content": content},
                         "logprobs": None, "finish_reason": None}]}))
    return b"".join(b"data: " + f + b"\n\n" for f in frames) + b"data: [DONE]\n\n"


def _governance(policy: dsl.CompiledPolicy) -> Governance:
    return Governance(
        policy_id=policy.policy_id, policy_revision=1, policy_name=policy.name,
        data_classification="internal", project_id="proj_bench", project_label="Bench",
        account_id="acct", user_id="key:1", policy_target="chat.completions", policy_user=None,
        quota_subject="key:1", surface="chat.completions", model="gpt-bench", stream=True,
        decision=dsl.Decision(), enforced=True, rollout_mode="enforced")


def _time(run) -> float:
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) / (FRAMES + 1) * 1e6)
    return statistics.median(samples)


def main() -> int:
    raw = _stream()
    tricky = _stream(disguised=True)
    plain = dsl.compile_policy((ROOT / "policies" / "support_bot.pol").read_text())
    monitored = dsl.compile_policy((ROOT / "policies" / "hard_refuse.pol").read_text())
    facts = dsl.RequestFacts(stream=True)

    def relay() -> None:
        for frame in SSEParser().feed(raw):
            if frame.data and not frame.is_done:
                orjson.loads(frame.data)
            _ = frame.raw

    def governed(policy: dsl.CompiledPolicy, with_monitor: bool, stream: bytes = raw) -> None:
        gov = _governance(policy)
        factory = ((lambda d: policy.output_monitor(facts, d, True)) if with_monitor else None)
        governor = StreamGovernor(CHAT, gov, factory)
        for frame in SSEParser().feed(stream):
            payload = None if frame.is_done or frame.data is None else orjson.loads(frame.data)
            governor.feed(frame, payload)
        governor.finish()

    results = {
        "relay_us_per_frame": _time(relay),
        "governed_us_per_frame": _time(lambda: governed(plain, False)),
        "monitored_us_per_frame": _time(lambda: governed(monitored, True)),
        "monitored_disguised_us_per_frame": _time(lambda: governed(monitored, True, tricky)),
    }
    base = results["relay_us_per_frame"]
    print("| per frame | median | vs relay |")
    print("|---|---|---|")
    for name, value in results.items():
        print(f"| {name.removesuffix('_us_per_frame')} | {value:.2f} us | {value / base:.2f}x |")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "frames.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
