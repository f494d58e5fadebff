"""The HTTP calls of the external classifiers: an OpenAI-moderation-compatible endpoint
(`POST {base_url}/moderations`) and a Llama Guard model behind an OpenAI-compatible chat
endpoint (`POST {base_url}/chat/completions`). Every failure is a `ClassifierFailed` naming
its kind; the caller turns it into a policy evaluation error."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import orjson
import trio

from gateway.errors import ClassifierFailed, MalformedVerdict
from gateway.moderation.settings import ExternalClassifier
from gateway.moderation.verdicts import (
    Verdict,
    llama_guard_verdict,
    openai_results,
)


@contextmanager
def first_failure() -> Iterator[None]:
    """Concurrent calls failing together fail as the first `ClassifierFailed` among them;
    anything else (a cancellation, a bug) propagates as it is."""
    try:
        yield
    except BaseExceptionGroup as group:
        failures, rest = group.split(ClassifierFailed)
        if rest is not None or failures is None:
            raise
        leaf: BaseException = failures
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        raise leaf from None


class ClassifierClient:
    """One external classifier over one pooled HTTP client."""

    def __init__(self, settings: ExternalClassifier, api_key: str | None,
                 transport: httpx2.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx2.Limits(max_connections=settings.max_concurrency,
                              max_keepalive_connections=settings.max_concurrency)
        self._http = httpx2.AsyncClient(base_url=settings.base_url, headers=headers,
                                       timeout=settings.timeout, limits=limits,
                                       transport=transport, trust_env=False)

    @property
    def name(self) -> str:
        return self.settings.name

    async def aclose(self) -> None:
        await self._http.aclose()

    async def texts(self, texts: list[str]) -> list[Verdict]:
        raise NotImplementedError

    async def image(self, url: str) -> Verdict:
        raise NotImplementedError

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            response = await self._http.post(path, content=orjson.dumps(body),
                                              headers={"content-type": "application/json"})
        except httpx2.TimeoutException:
            raise ClassifierFailed("timeout", f"{self.name} did not answer in time") from None
        except httpx2.HTTPError as exc:
            raise ClassifierFailed("unreachable",
                                   f"{self.name} is unreachable: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise ClassifierFailed(f"http_{response.status_code}",
                                   f"{self.name} answered HTTP {response.status_code}")
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise ClassifierFailed("malformed", f"{self.name} answered with invalid JSON") from None


class OpenAIModeration(ClassifierClient):
    """`/moderations`: the texts go in one call (an input list, results in order); each image
    goes alone, as the hosted moderation of the product we build from does."""

    async def texts(self, texts: list[str]) -> list[Verdict]:
        answer = await self._post("/moderations", {"model": self.settings.model,
                                                   "input": texts})
        return _read(lambda: openai_results(answer, len(texts)), self.name)

    async def image(self, url: str) -> Verdict:
        answer = await self._post("/moderations", {
            "model": self.settings.model,
            "input": [{"type": "image_url", "image_url": {"url": url}}]})
        return _read(lambda: openai_results(answer, 1), self.name)[0]


class LlamaGuard(ClassifierClient):
    """A Llama Guard model: one chat completion per text or image; the server applies the
    model's own prompt template to the single user turn."""

    async def texts(self, texts: list[str]) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(texts)

        async def one(index: int, text: str) -> None:
            verdicts[index] = await self._verdict(text)

        with first_failure():
            async with trio.open_nursery() as nursery:
                for index, text in enumerate(texts):
                    nursery.start_soon(one, index, text)
        return [v for v in verdicts if v is not None]

    async def image(self, url: str) -> Verdict:
        return await self._verdict([{"type": "image_url", "image_url": {"url": url}}])

    async def _verdict(self, content: str | list[dict[str, Any]]) -> Verdict:
        body: dict[str, Any] = {"model": self.settings.model, "max_tokens": 24,
                                "temperature": 0,
                                "messages": [{"role": "user", "content": content}]}
        if self.settings.logprobs:
            body["logprobs"] = True
        answer = await self._post("/chat/completions", body)
        return _read(lambda: llama_guard_verdict(answer), self.name)


def _read(parse: Any, name: str) -> Any:
    try:
        return parse()
    except MalformedVerdict as exc:
        raise ClassifierFailed("malformed", f"{name}: {exc}") from None


def client_for(settings: ExternalClassifier, api_key: str | None,
               transport: httpx2.AsyncBaseTransport | None = None) -> ClassifierClient:
    cls = OpenAIModeration if settings.name == "openai" else LlamaGuard
    return cls(settings, api_key, transport)
