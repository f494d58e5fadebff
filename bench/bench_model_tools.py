"""What tool rules cost on the tool calls models issue, measured in one run, sans-I/O:

- per frame of a governed stream (2000 text chunks, then a tool call in 12 argument pieces), for
  each API, with and without tool rules (the policy has no output rules: the tool rules are what
  differs), median of the rounds;
- one tool-call decision (facts, classification, the input decision path).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dsl  # noqa: E402
from gateway.adapters import CHAT, MESSAGES, RESPONSES  # noqa: E402
from gateway.adapters.base import Adapter  # noqa: E402
from gateway.policy.governance import Governance  # noqa: E402
from gateway.policy.stream import StreamGovernor  # noqa: E402
from gateway.policy.toolcalls import ToolJudge  # noqa: E402
from gateway.upstream import echo  # noqa: E402
from gateway.upstream.sse import Frame, SSEParser  # noqa: E402

ROUNDS = 15
POLICY = dsl.compile_policy(r'''
policy v1 "bench_tools" {
  name "Bench tools"
  classification "internal"
  default allow
  on_error refuse
  denylist destructive = ["rm -rf", "drop table"]
  rule no_destructive { when tool_arguments contains any of destructive then refuse reason D }
  rule no_deletions { when input matches /\Adelete_/ then refuse reason X }
}
''')
ARGUMENTS = '{"city": "Oslo", "units": "metric", "days": 3, "hourly": false}'
APIS = {"chat.completions": (CHAT, echo.chat_completion_frames),
        "messages": (MESSAGES, echo.message_frames),
        "responses": (RESPONSES, echo.response_frames)}


def _governance(surface: str) -> Governance:
    return Governance(
        policy_id="bench_tools", policy_revision=1, policy_name="Bench tools",
        data_classification="internal", project_id="proj_bench", project_label="Bench",
        account_id="acct", user_id="key:1", policy_target=surface, policy_user=None,
        quota_subject="key:1", surface=surface, model="m", stream=True,
        decision=dsl.Decision(), enforced=True, rollout_mode="enforced")


def _median(run: Callable[[], None]) -> float:
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def _govern(adapter: Adapter, surface: str, frames: list[tuple[Frame, Any]],
            judge: ToolJudge | None) -> None:
    governor = StreamGovernor(adapter, _governance(surface), None, tool_judge=judge)
    for frame, payload in frames:
        governor.feed(frame, payload)
    governor.finish()


def main() -> int:
    facts = dsl.RequestFacts(model="m", stream=True, input_text="What is the weather?")
    pieces = tuple(ARGUMENTS[i:i + 5] for i in range(0, len(ARGUMENTS), 5))
    reply = echo.Reply(chunks=tuple(["word "] * 2000), input_tokens=1, output_tokens=1,
                       key="k", created=1, tool_calls=(("get_weather", pieces),))
    for surface, (adapter, frames_of) in APIS.items():
        raw = b"".join(frames_of({"model": "m"}, reply))
        frames = [(f, None if f.data == "[DONE]" else orjson.loads(f.data or ""))
                  for f in SSEParser().feed(raw)]
        figures = {}
        for label, with_rules in (("without tool rules", False), ("with tool rules", True)):
            judge = ToolJudge([POLICY], facts, enforced=True) if with_rules else None
            seconds = _median(partial(_govern, adapter, surface, frames, judge))
            figures[label] = seconds / len(frames) * 1e6
        print(f"{surface}: " + ", ".join(f"{k} {v:.2f} us/frame" for k, v in figures.items())
              + f" ({len(frames)} frames)")
    judge = ToolJudge([POLICY], facts, enforced=True)
    seconds = _median(lambda: [judge.decide("get_weather", ARGUMENTS) for _ in range(200)])
    print(f"one tool-call decision: {seconds / 200 * 1e6:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
