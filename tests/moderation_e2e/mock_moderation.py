"""A mock moderation upstream: OpenAI's `POST /v1/moderations` in its exact answer shape, and a
Llama Guard model behind `POST /v1/chat/completions`. It records every request it received.

Scores come from markers in the text or image URL: `[[violence=0.9]]` scores `violence` 0.9
(in `category_scores`; `categories` flags it when >= 0.5, as the hosted model's own threshold
would). `mode` makes it misbehave: `timeout` (answers after `delay` seconds), `500`, `429`,
`garbage` (not JSON), `wrong_shape` (JSON without `results`). `llama_verdict` is the content the
Llama Guard endpoint answers. `served` stands for what an image URL serves right now (its
markers replace the URL's own), so a test can swap the image behind a URL; `image_status`
answers image calls alone with that HTTP status (a classifier failing to fetch an image).
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import trio
from servers import ThreadServer, answer_lifespan, read_body

from dsl.classifiers import CATEGORIES

MARKER = re.compile(r"\[\[([a-z/-]+)=([0-9.]+)\]\]")
#: Which inputs the hosted model applies each category to (its `category_applied_input_types`).
IMAGE_CATEGORIES = {"self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
                    "violence", "violence/graphic"}


def moderation_result(content: str, kind: str) -> dict[str, Any]:
    scores = dict.fromkeys(CATEGORIES, 0.0)
    for category, score in MARKER.findall(content):
        if category in scores and (kind == "text" or category in IMAGE_CATEGORIES):
            scores[category] = max(scores[category], float(score))
    applied = {c: ([kind] if kind == "text" or c in IMAGE_CATEGORIES else [])
               for c in CATEGORIES}
    return {"flagged": any(s >= 0.5 for s in scores.values()),
            "categories": {c: s >= 0.5 for c, s in scores.items()},
            "category_scores": scores, "category_applied_input_types": applied}


class MockModeration:
    def __init__(self) -> None:
        self.mode = "ok"
        self.delay = 5.0
        self.llama_verdict = "safe"
        self.served: dict[str, str] = {}
        self.image_status: int | None = None
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.answers: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadServer(lambda: self.app)

    @property
    def url(self) -> str:
        return self._server.url + "/v1"

    def start(self) -> MockModeration:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        with self._lock:
            self.mode, self.llama_verdict = "ok", "safe"
            self.served.clear()
            self.image_status = None
            self.received.clear()
            self.answers.clear()

    def inputs(self) -> list[Any]:
        """The `input` of every moderations call received, in order."""
        return [body["input"] for path, body in self.received if path.endswith("/moderations")]

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        body = json.loads(await read_body(receive))
        with self._lock:
            self.received.append((scope["path"], body))
        status, payload = await self._answer(scope["path"], body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})

    async def _answer(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        if self.mode == "timeout":
            await trio.sleep(self.delay)
        if self.mode == "500":
            return 500, b'{"error": {"message": "boom", "type": "server_error"}}'
        if self.mode == "429":
            return 429, b'{"error": {"message": "slow down", "type": "rate_limit_error"}}'
        if self.mode == "garbage":
            return 200, b"<html>not json"
        if self.mode == "wrong_shape":
            return 200, b'{"id": "modr-1", "data": []}'
        if self.image_status is not None and '"image_url"' in json.dumps(body):
            return self.image_status, b'{"error": {"message": "could not fetch the image"}}'
        if path.endswith("/chat/completions"):
            answer = self._llama(body)
        else:
            answer = self._moderation(body)
        with self._lock:
            self.answers.append(answer)
        return 200, json.dumps(answer).encode()

    def _moderation(self, body: dict[str, Any]) -> dict[str, Any]:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        results = []
        for item in inputs:
            if isinstance(item, str):
                results.append(moderation_result(item, "text"))
            elif item.get("type") == "image_url":
                url = item["image_url"]["url"]
                results.append(moderation_result(self.served.get(url, url), "image"))
            else:
                results.append(moderation_result(item["text"], "text"))
        return {"id": f"modr-{len(self.received)}", "model": body.get("model", "x"),
                "results": results}

    def _llama(self, body: dict[str, Any]) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": self.llama_verdict}}
        if body.get("logprobs"):
            first = self.llama_verdict.split()[0] if self.llama_verdict.split() else ""
            choice["logprobs"] = {"content": [{"token": first, "logprob": -0.105,
                                               "bytes": None, "top_logprobs": []}]}
        return {"id": "chatcmpl-lg", "object": "chat.completion", "created": 0,
                "model": body.get("model", "x"), "choices": [choice],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
