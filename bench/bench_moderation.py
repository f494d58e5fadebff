"""The external classifier path: added latency and cache hit rate.

    .venv/bin/python bench/bench_moderation.py [--requests N] [--json]

The tests' OpenAI-moderation mock (tests/moderation_e2e/mock_moderation.py, served by hypercorn
on 127.0.0.1 in the same trio run, answering at once) stands in for the hosted model. Measured per request: `Moderator.classify_request` with the built-in classifier,
with the external one and no cache (every request is a network call), and with the external one
and its cache warm. Then a 20-turn conversation (each request carries the whole history, as chat
clients send it) is played once and replayed, and the cache hit rate of each pass is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# The mock moderation upstream imports the tests' helpers as the tests do.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import httpx2
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

import dsl
from gateway import Config, create_app
from gateway.db import open_database
from gateway.identity.keys import IdentityStore
from gateway.identity.projects import ProjectStore
from gateway.moderation import ModerationSettings, Moderator
from tests.moderation_e2e.mock_moderation import MockModeration

POLICY_SOURCE = '''policy v1 "bench" {
  default allow
  rule a { when category "violence" in last_user then refuse }
  rule b { when category "hate" in system then refuse }
}'''
POLICY = dsl.compile_policy(POLICY_SOURCE)


async def serve_mock_moderation(nursery: trio.Nursery) -> str:
    """The tests' mock moderation upstream, served in `nursery` on 127.0.0.1: its `/v1` URL.
    The bench's texts carry no score markers, so it flags nothing, as the hosted model would."""
    config = HypercornConfig()
    config.bind, config.accesslog, config.errorlog = ["127.0.0.1:0"], None, None
    mock = MockModeration()
    binds = await nursery.start(lambda task_status: serve(
        mock.app, config, task_status=task_status))  # type: ignore[arg-type]
    return str(binds[0]) + "/v1"


class Counting:
    def __init__(self) -> None:
        self.hits = self.misses = 0

    def call_finished(self, classifier: str, kind: str, outcome: str, seconds: float) -> None:
        return None

    def cache_looked_up(self, classifier: str, hit: bool) -> None:
        if hit:
            self.hits += 1
        else:
            self.misses += 1


def facts(history: list[str], system: str = "You are a helpful assistant.") -> dsl.RequestFacts:
    return dsl.RequestFacts(input_text="\n".join([system, *history]),
                            last_user_text=history[-1], system_text=system)


async def timings(moderator: Moderator, requests: int, *, distinct: bool) -> list[float]:
    found = []
    for index in range(requests):
        text = f"question number {index if distinct else 0} about my order"
        started = time.perf_counter()
        await moderator.classify_request([POLICY], facts([text]), {})
        found.append((time.perf_counter() - started) * 1000)
    return found


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50_ms": round(statistics.median(ordered), 3),
            "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1], 3)}


async def conversation(moderator: Moderator, turns: int) -> tuple[int, int]:
    counter = Counting()
    moderator.observer = counter
    history: list[str] = []
    for turn in range(turns):
        history.append(f"user turn {turn}: tell me more about item {turn}")
        await moderator.classify_request([POLICY], facts(history), {})
        history.append(f"assistant turn {turn}: here is more about item {turn}")
    return counter.hits, counter.misses


def prepare(root: Path, moderation: dict[str, Any]) -> tuple[Config, str]:
    """A database, the bench policy, a project and its key under `root`."""
    root.mkdir(parents=True)
    (root / "policies").mkdir()
    (root / "policies" / "bench.pol").write_text(POLICY_SOURCE)
    config = Config.from_mapping({"database": {"path": str(root / "g.db")},
                                  "policies": {"directory": str(root / "policies")},
                                  "moderation": moderation}, env={})
    store = IdentityStore(open_database(root / "g.db"))
    account = store.create_account("bench", "control")
    ProjectStore(open_database(root / "g.db")).create(
        "proj_bench", account_id=account.id, name="Bench", policy_id="bench")
    return config, store.create_key(account.id, project_id="proj_bench")[1]


async def start_gateway(root: Path, moderation: dict[str, Any], nursery: trio.Nursery
                        ) -> tuple[str, str, trio.Event]:
    """A gateway served by hypercorn with the bench policy: (its URL, a key, its shutdown)."""
    config, key = prepare(root, moderation)
    hyper = HypercornConfig()
    hyper.bind, hyper.accesslog, hyper.errorlog = ["127.0.0.1:0"], None, None
    shutdown = trio.Event()
    binds = await nursery.start(lambda task_status: serve(
        create_app(config), hyper, shutdown_trigger=shutdown.wait,
        task_status=task_status))  # type: ignore[arg-type]
    return binds[0], key, shutdown


async def gateway_timings(root: Path, moderation_url: str, requests: int,
                          nursery: trio.Nursery) -> dict[str, list[float]]:
    """Sequential governed chat completions (answered by the built-in echo upstream), taking
    turns between a gateway with the built-in classifier and one with the external classifier
    (no cache), so that the machine's load drifts hit both alike."""
    targets = {"builtin": await start_gateway(root / "builtin", {}, nursery),
               "external": await start_gateway(root / "external", {
                   "classifier": "openai", "cache_entries": 0,
                   "openai": {"base_url": moderation_url, "api_key_env": ""}}, nursery)}
    found: dict[str, list[float]] = {name: [] for name in targets}
    async with httpx2.AsyncClient(timeout=10) as client:
        for index in range(requests + 20):
            for name, (url, key, _) in targets.items():
                started = time.perf_counter()
                reply = await client.post(url + "/policy/v1/chat/completions", headers={
                    "authorization": f"Bearer {key}"}, json={"model": "gpt-4o-mini", "messages": [
                        {"role": "system", "content": "You are a helpful assistant."},
                        {"role": "user", "content": f"question {index} about my order"}]})
                assert reply.status_code == 200, reply.text
                if index >= 20:  # the first ones warm connections and caches
                    found[name].append((time.perf_counter() - started) * 1000)
    for _, _, shutdown in targets.values():
        shutdown.set()
    return found


async def run(requests: int) -> dict[str, Any]:
    async with trio.open_nursery() as nursery:
        url = await serve_mock_moderation(nursery)

        def moderator(cache: int, classifier: str = "openai") -> Moderator:
            return Moderator(ModerationSettings.from_mapping({
                "classifier": classifier, "cache_entries": cache,
                "openai": {"base_url": url, "api_key_env": ""}}), {})

        report: dict[str, Any] = {}
        builtin = moderator(0, "builtin")
        report["builtin"] = summary(await timings(builtin, requests, distinct=True))
        uncached = moderator(0)
        await timings(uncached, 20, distinct=True)  # warm the connection pool
        report["external_uncached"] = summary(await timings(uncached, requests, distinct=True))
        cached = moderator(10_000)
        await timings(cached, 1, distinct=False)
        report["external_cached"] = summary(await timings(cached, requests, distinct=False))
        report["added_p50_ms"] = round(report["external_uncached"]["p50_ms"]
                                       - report["builtin"]["p50_ms"], 3)
        convo = moderator(10_000)
        first = await conversation(convo, 20)
        replay = await conversation(convo, 20)
        report["conversation_first_pass"] = {"hits": first[0], "misses": first[1],
                                             "hit_rate": round(first[0] / sum(first), 3)}
        report["conversation_replayed"] = {"hits": replay[0], "misses": replay[1],
                                           "hit_rate": round(replay[0] / sum(replay), 3)}
        for m in (builtin, uncached, cached, convo):
            await m.aclose()
        with tempfile.TemporaryDirectory() as tmp:
            timed = await gateway_timings(Path(tmp), url, requests, nursery)
        report["gateway_builtin"] = summary(timed["builtin"])
        report["gateway_external_uncached"] = summary(timed["external"])
        report["gateway_added_p50_ms"] = round(statistics.median(timed["external"])
                                               - statistics.median(timed["builtin"]), 3)
        nursery.cancel_scope.cancel()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.parse_args()
    print(json.dumps(trio.run(run, parser.parse_args().requests), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
