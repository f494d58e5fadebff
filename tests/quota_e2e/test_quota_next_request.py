"""A client that sends its next request the moment its previous answer ended sees the previous
request's real usage in `x-ratelimit-remaining-*`: settlement completes before the answer ends,
streamed or not, whichever worker serves the next request."""

from __future__ import annotations

import itertools
import json

import httpx2
import pytest

from .conftest import Workers

LIMIT = 1_000_000
BUDGET = {"requests": {"daily": 1000}, "tokens": {"daily": LIMIT}}
USAGE = {"input_tokens": 11, "output_tokens": 7}  # 18 tokens really used per request
BODY = {"model": "gpt-4o-mini", "max_tokens": 500,  # the estimate is over 500 tokens
        "messages": [{"role": "user", "content": "hello"}]}
ROUNDS = 25


def _send(client: httpx2.Client, url: str, key: str, stream: bool) -> httpx2.Headers:
    headers = {"authorization": f"Bearer {key}", "x-mock-scenario": json.dumps({"usage": USAGE})}
    with client.stream("POST", url, json={**BODY, "stream": stream}, headers=headers) as answer:
        body = answer.read()  # to the end of the answer: then the next request goes at once
        assert answer.status_code == 200, body
        if stream:
            assert body.rstrip().endswith(b"data: [DONE]")
        return answer.headers


@pytest.mark.parametrize("stream", [False, True])
def test_the_next_request_sees_the_previous_usage(workers: Workers, stream: bool) -> None:
    _, key = workers.project(budget=BUDGET)
    url = workers.url + "/policy/chat/completions"
    remaining: list[tuple[int, int]] = []
    with httpx2.Client(timeout=30) as client:
        for _ in range(ROUNDS):
            headers = _send(client, url, key, stream)
            remaining.append((int(headers["x-ratelimit-remaining-requests"]),
                              int(headers["x-ratelimit-remaining-tokens"])))
    # Each answer's headers count its own estimate and every earlier request's real usage: one
    # request and 18 tokens apart. An unsettled predecessor would still hold its 500+ estimate.
    steps = [(before[0] - after[0], before[1] - after[1])
             for before, after in itertools.pairwise(remaining)]
    assert steps == [(1, 18)] * (ROUNDS - 1)
    assert remaining[0][0] == 1000 - 1 and remaining[0][1] < LIMIT - 500
