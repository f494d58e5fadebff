"""The external classifier's shared cache and stream hold-back.

    .venv/bin/python bench/bench_moderation_shared.py [--requests N]

Needs `redis-server` on the PATH (started here on a free port of 127.0.0.1, in memory only).
Measured: `Moderator.classify_request` answered from Redis (no per-worker LRU) against the
in-memory LRU and an uncached call; a 20-turn conversation played on one replica and replayed on
another (fresh LRU, the same Redis): its hit rate and the calls made; and, for a streamed answer
of 4,000 characters through the window hold-back, how much text was held back beyond what the
built-in monitor holds, and how many classifier calls it took.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
import trio

import dsl
from bench.bench_moderation import (
    conversation,
    serve_mock_moderation,
    summary,
    timings,
)
from gateway.adapters import CHAT
from gateway.moderation import ModerationSettings, Moderator
from gateway.moderation.stream_windows import WindowedStream
from gateway.policy.governance import Governance
from gateway.policy.stream import StreamGovernor
from gateway.redis_link import RedisLink, RedisSettings
from gateway.upstream import echo
from gateway.upstream.sse import SSEParser

OUTPUT_POLICY = dsl.compile_policy('''policy v1 "out" {
  default allow
  rule harassing { when category "harassment" in output then refuse }
}''')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save",
                                "", "--appendonly", "no", "--dir", directory],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("redis-server did not start")


def moderator(url: str, cache: int, port: int | None = None, **section: Any) -> Moderator:
    link = RedisLink(RedisSettings(host="127.0.0.1", port=port, key_prefix="bench:")) if (
        port is not None) else None
    return Moderator(ModerationSettings.from_mapping({
        "classifier": "openai", "cache_entries": cache,
        "openai": {"base_url": url, "api_key_env": ""}, **section}), {}, redis=link)


async def close(*moderators: Moderator) -> None:
    for found in moderators:
        await found.aclose()
        shared = getattr(found.cache, "shared", None)
        if shared is not None:
            await shared.link.aclose()


async def replicas(url: str, port: int) -> dict[str, Any]:
    first, second = moderator(url, 10_000, port), moderator(url, 10_000, port)
    played = await conversation(first, 20)
    replayed = await conversation(second, 20)
    await close(first, second)
    return {"first_replica": {"hits": played[0], "misses": played[1]},
            "second_replica_replay": {"hits": replayed[0], "misses": replayed[1],
                                      "hit_rate": round(replayed[0] / sum(replayed), 3)}}


async def stream_holdback(url: str, interval: int, seed: int) -> dict[str, Any]:
    """A 4,000-character answer in random chunks through the window hold-back: the most text
    held beyond the built-in monitor's own hold-back (before the end, where both let go of
    everything), and the classifier calls made."""
    rng = random.Random(seed)
    text = "".join(f"word{i:04d} " for i in range(400))
    edges = sorted({0, len(text), *(rng.randrange(len(text)) for _ in range(200))})
    chunks = [text[a:b] for a, b in itertools.pairwise(edges)]
    raw = b"".join(echo.chat_completion_frames({"model": "m"}, echo.Reply(
        chunks=tuple(chunks), input_tokens=1, output_tokens=1, key="k", created=0)))
    frames = [(f, None if f.data == "[DONE]" else orjson.loads(f.data or ""))
              for f in SSEParser().feed(raw)]
    facts = dsl.RequestFacts(surface="chat.completions", model="m", stream=True)
    governance = Governance(
        policy_id="out", policy_revision=1, policy_name="Out", data_classification="internal",
        project_id="p", project_label="P", account_id="a", user_id="u", policy_target=None,
        policy_user=None, quota_subject="u", surface="chat.completions", model="m", stream=True,
        decision=OUTPUT_POLICY.evaluate_input(facts, dsl.classify("")), enforced=True,
        rollout_mode="enforced")
    alone = StreamGovernor(CHAT, governance, lambda d: OUTPUT_POLICY.output_monitor(
        facts, d, True))
    found = moderator(url, 0, stream_interval_chars=interval)
    windowed = WindowedStream(StreamGovernor(CHAT, governance, lambda d: OUTPUT_POLICY
                                             .output_monitor(facts, d, True)),
                              found, [OUTPUT_POLICY], facts, None)
    sent_alone = sent_windowed = 0
    extra: list[int] = []
    for frame, payload in frames:
        sent_alone += len(delta_text(alone.feed(frame, payload)))
        sent_windowed += len(delta_text(windowed.feed(frame, payload)))
        sent_windowed += len(delta_text(await windowed.checkpoint()))
        if sent_alone < len(text):  # not the end, where the monitor lets go of all it held
            extra.append(sent_alone - sent_windowed)
    sent_windowed += len(delta_text(await windowed.checkpoint(final=True) + windowed.finish()))
    assert sent_windowed == sent_alone == len(text)
    await close(found)
    return {"interval": interval, "max_extra_held_chars": max(extra),
            "mean_extra_held_chars": round(sum(extra) / len(extra), 1),
            "classifier_calls": windowed.windows, "frames": len(frames)}


def delta_text(sent: bytes) -> str:
    return "".join(CHAT.stream_delta(None, orjson.loads(f.data)) or ""
                   for f in SSEParser().feed(sent) if f.data and f.data != "[DONE]")


async def run(requests: int, port: int) -> dict[str, Any]:
    async with trio.open_nursery() as nursery:
        url = await serve_mock_moderation(nursery)
        report: dict[str, Any] = {}
        uncached = moderator(url, 0)
        await timings(uncached, 20, distinct=True)
        report["external_uncached"] = summary(await timings(uncached, requests, distinct=True))
        memory = moderator(url, 10_000)
        await timings(memory, 1, distinct=False)
        report["external_lru_hit"] = summary(await timings(memory, requests, distinct=False))
        shared = moderator(url, 0, port)  # no LRU: every look-up goes to Redis
        await timings(shared, 20, distinct=False)
        report["external_redis_hit"] = summary(await timings(shared, requests, distinct=False))
        await close(uncached, memory, shared)
        report["conversation_across_replicas"] = await replicas(url, port)
        report["stream_holdback"] = [await stream_holdback(url, interval, 7)
                                     for interval in (200, 400, 800)]
        nursery.cancel_scope.cancel()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        process, port = start_redis(directory)
        try:
            print(json.dumps(trio.run(run, options.requests, port), indent=2))
        finally:
            process.kill()
            process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
