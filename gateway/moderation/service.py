"""The classifier seam: a request's texts and images in, the `Classification` its policies
evaluate on out, from the configured classifier.

The built-in classifier is pure and in memory. An external one is a second network call on the
request path besides the upstream's (inherent to asking a hosted model), bounded by its
`timeout`, shared by its `max_concurrency` and skipped while its circuit breaker is open. Its
failure never fails the request: the outcome carries the error and `applied` lets each policy's
`on_error` decide, with reason code CLASSIFIER_ERROR.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import httpx2
import trio

import dsl
from dsl.classifiers import CATEGORY_THRESHOLD, Classification, find_pii
from dsl.decision import CATEGORY_SURFACES
from gateway.moderation.clients import (
    ClassifierClient,
    ClassifierFailed,
    client_for,
    first_failure,
)
from gateway.moderation.guard import (
    BreakerOpen,
    CircuitBreaker,
    MemoryCache,
    ModerationObserver,
    NoObserver,
    VerdictCache,
    content_key,
    merged,
)
from gateway.moderation.images import ImagePart, image_parts, is_data_url
from gateway.moderation.policy_texts import texts_needed
from gateway.moderation.settings import ModerationSettings
from gateway.moderation.shared_cache import LayeredCache, RedisVerdictCache
from gateway.moderation.verdicts import Verdict
from gateway.redis_link import RedisLink

log = logging.getLogger("gateway.moderation")
CLASSIFIER_ERROR = "CLASSIFIER_ERROR"
IMAGE_NOT_MODERATED = "IMAGE_NOT_MODERATED"
#: What the caller is told when classifying an image failed. The kind itself (timeout,
#: unreachable, an HTTP status) depends on where the image URL pointed, so telling it would
#: let callers probe hosts through the classifier: it stays in the event.
IMAGE_FAILURE_SHOWN = "image_classification_failed"


@dataclass(frozen=True, slots=True)
class ModerationOutcome:
    """What the classifier in force found in one request (or one output), never its text."""

    classification: Classification
    #: Who decided: `builtin`, `openai`, `llama-guard`, or `builtin+openai` (chain).
    classifier: str
    #: Every category score found (texts and images together), for the record.
    scores: Mapping[str, float] = field(default_factory=dict)
    images: int = 0
    #: Why no trustworthy classification exists (the failure kind), if so.
    error: str | None = None
    reason_code: str | None = None
    #: Unmoderated images with `unmoderated_images = "refuse"`: refused whatever `on_error` says.
    refuse: bool = False
    unmapped_codes: tuple[str, ...] = ()
    #: The external classifier that failed (the categories are then the built-in ones).
    failed: str | None = None
    #: The failure was an image's: the caller sees `IMAGE_FAILURE_SHOWN`, not `error`.
    image_failed: bool = False

    def record(self) -> dict[str, Any]:
        """The `moderation` object of the `policy` object and of events."""
        found: dict[str, Any] = {
            "classifier": self.classifier,
            "categories": {c: round(s, 6) for c, s in sorted(self.scores.items())},
            "images": self.images, "error": self.error}
        if self.unmapped_codes:
            found["unmapped_codes"] = list(self.unmapped_codes)
        if self.failed:
            found["failed_classifier"] = self.failed
        if self.image_failed:
            found["failed_part"] = "image"
        return found

    def applied(self, decision: dsl.Decision, policies: Sequence[dsl.CompiledPolicy]
                ) -> dsl.Decision:
        """`decision` after each policy's `on_error` judged the failed classification (or
        `refuse`, for refused unmoderated images); the more severe outcome wins."""
        if self.reason_code is None:
            return decision
        from gateway.policy.governance import combine

        error = IMAGE_FAILURE_SHOWN if self.image_failed else self.error
        message = f"classifier {self.failed or self.classifier}: {error}"
        for policy in policies:
            verdict = "refuse" if self.refuse else policy.on_error
            failed = dsl.Decision(decision=verdict, reason_code=self.reason_code, error=message,
                                  fired_rules=("~on_error",))
            decision = combine(failed, decision) if failed.severity >= decision.severity \
                else combine(decision, failed)
        return decision


class Moderator:
    """One per worker: the clients, cache and breaker of the configured classifier."""

    def __init__(self, settings: ModerationSettings, env: Mapping[str, str], *,
                 transport: httpx2.AsyncBaseTransport | None = None,
                 redis: RedisLink | None = None) -> None:
        self.settings = settings
        self.observer: ModerationObserver = NoObserver()
        memory = MemoryCache(settings.cache_entries)
        #: With `[redis]`, results are shared by replicas; the worker's LRU stays in front.
        self.cache: VerdictCache = memory if redis is None else LayeredCache(
            memory, RedisVerdictCache(redis, settings.cache_ttl))
        external = settings.external
        self.client: ClassifierClient | None = None
        self.breaker: CircuitBreaker | None = None
        self._limiter: trio.CapacityLimiter | None = None
        if external is not None:
            key = env.get(external.api_key_env) if external.api_key_env else None
            self.client = client_for(external, key or None, transport)
            self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown)
            self._limiter = trio.CapacityLimiter(external.max_concurrency)

    @property
    def name(self) -> str:
        if self.client is None:
            return "builtin"
        return f"builtin+{self.client.name}" if self.settings.classifier == "chain" else (
            self.client.name)

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    # --- requests ---------------------------------------------------------------------------

    async def classify_request(self, policies: Sequence[dsl.CompiledPolicy],
                               facts: dsl.RequestFacts, body: dict[str, Any], *,
                               asked: bool = False) -> ModerationOutcome:
        """The input classification `policies` evaluate `facts` on; `body` for its images.
        `asked`: the project's policy asks for the external classifier always (`chain`)."""
        category_surface = facts.surface in CATEGORY_SURFACES
        needed = texts_needed(policies, category_surface=category_surface,
                              always_blocked=bool(self.settings.always_blocked),
                              flagged=bool(facts.flagged_categories))
        raw = {"input": facts.input_text, "last_user": facts.last_user_text,
               "system": facts.system_text}
        images = image_parts(facts.surface, body) if any(
            t in needed for t in ("input", "last_user")) else []
        builtin = {text: dsl.classify(raw[text]) for text in needed}
        if "input" not in builtin:  # the policies read no input category: nothing to send
            builtin["input"] = Classification(pii=tuple(find_pii(facts.input_text)))
        if self.client is None:
            return self._unchecked_images(_outcome(builtin, "builtin", len(images)), images)
        if self.client.settings.images and len(images) > self.settings.max_images:
            return self._failed(builtin, len(images), "too_many_images")
        try:
            scores, image_scores, unmapped = await self._external(
                {t: raw[t] for t in needed}, images, builtin, asked)
        except ClassifierFailed as failed:
            return self._failed(builtin, len(images), failed.kind, image=failed.image)
        classes = {text: Classification(
            MappingProxyType(merged(builtin[text].categories if self._chain else {},
                                    scores.get(text, {}),
                                    *(s for image, s in image_scores if _counts_for(image, text)))),
            builtin[text].pii) for text in builtin}
        outcome = _outcome(classes, self.name, len(images), unmapped=unmapped)
        return self._unchecked_images(outcome, [
            image for image in images if not self._sees(image)])

    async def classify_output(self, text: str, *, asked: bool = False) -> Classification:
        """The output text's classification (raises ClassifierFailed)."""
        builtin = dsl.classify(text)
        if self.client is None:
            return builtin
        scores, _, _ = await self._external({"output": text}, [], {"output": builtin}, asked)
        return Classification(MappingProxyType(merged(
            builtin.categories if self._chain else {}, scores.get("output", {}))), builtin.pii)

    # --- internals --------------------------------------------------------------------------

    def asks_external(self, policy_id: str | None) -> bool:
        """`chain`: whether the project's policy `policy_id` (registered, never an inline one:
        callers name those) asks for the external classifier always (`chain_policies`)."""
        return self._chain and policy_id in self.settings.chain_policies

    @property
    def _chain(self) -> bool:
        return self.settings.classifier == "chain"

    def _failed(self, builtin: dict[str, Classification], images: int, kind: str, *,
                image: bool = False) -> ModerationOutcome:
        """No external classification: the rules see the built-in one, `on_error` decides."""
        assert self.client is not None
        return dataclasses.replace(_outcome(builtin, "builtin", images), error=kind,
                                   reason_code=CLASSIFIER_ERROR, failed=self.client.name,
                                   image_failed=image)

    def _sees(self, image: ImagePart) -> bool:
        """Whether the external classifier is sent `image`: it takes images, the image has a
        URL, and that URL is a `data:` URL or the classifier may fetch remote ones."""
        assert self.client is not None
        settings = self.client.settings
        return settings.images and image.url is not None and (
            settings.remote_images or is_data_url(image.url))

    def _unchecked_images(self, outcome: ModerationOutcome, unchecked: list[ImagePart]
                          ) -> ModerationOutcome:
        """Images the classifier in force cannot see are never silently safe: they follow
        `on_error` or are refused, unless `unmoderated_images = "allow"`."""
        if not unchecked or self.settings.unmoderated_images == "allow":
            return outcome
        return dataclasses.replace(
            outcome, error="images_not_moderated", reason_code=IMAGE_NOT_MODERATED,
            refuse=self.settings.unmoderated_images == "refuse")

    async def _external(self, texts: dict[str, str], images: list[ImagePart],
                        builtin: dict[str, Classification], asked: bool = False
                        ) -> tuple[dict[str, dict[str, float]],
                                   list[tuple[ImagePart, dict[str, float]]], tuple[str, ...]]:
        """External scores per text and per image. Chain: only texts the built-in classifier
        found nothing in are sent, unless a policy `asked` for the external one always."""
        assert self.client is not None
        send = {name: text for name, text in texts.items() if text.strip() and not (
            self._chain and not asked and builtin[name].triggered(CATEGORY_THRESHOLD))}
        distinct = list(dict.fromkeys(send.values()))
        client_images = [image for image in images if self._sees(image)]
        verdicts: dict[str, Verdict] = {}
        image_verdicts: list[Verdict | None] = [None] * len(client_images)

        async def classify_texts() -> None:
            verdicts.update(await self._cached("text", distinct))

        async def classify_image(index: int, url: str | None) -> None:
            assert url is not None  # images without a URL are never sent
            try:
                image_verdicts[index] = await self._image_verdict(url)
            except ClassifierFailed as failed:
                raise ClassifierFailed(failed.kind, str(failed), image=True) from None

        with first_failure():
            async with trio.open_nursery() as nursery:
                if distinct:
                    nursery.start_soon(classify_texts)
                for index, image in enumerate(client_images):
                    nursery.start_soon(classify_image, index, image.url)
        scores = {name: dict(verdicts[text].scores) for name, text in send.items()}
        found = [(image, dict(v.scores)) for image, v in zip(client_images, image_verdicts,
                                                             strict=True) if v is not None]
        unmapped = tuple(dict.fromkeys(code for v in (*verdicts.values(), *image_verdicts)
                                       if v is not None for code in v.unmapped))
        return scores, found, unmapped

    async def _image_verdict(self, url: str) -> Verdict:
        """A `data:` URL is its image: its verdict is cached by it. A remote URL only names a
        place whose bytes may change between fetches (and differ between the classifier's
        fetch and the provider's): its verdict is never cached, so the classifier fetches it
        again on every request."""
        if is_data_url(url):
            return (await self._cached("image", [url]))[url]
        return (await self._call("image", [url]))[0]

    async def _cached(self, kind: str, contents: list[str]) -> dict[str, Verdict]:
        assert self.client is not None
        settings, found = self.client.settings, {}
        missing = []
        for content in contents:
            hit = await self.cache.get(content_key(settings.name, settings.model, kind, content))
            self.observer.cache_looked_up(settings.name, hit is not None)
            if hit is None:
                missing.append(content)
            else:
                found[content] = hit
        if missing:
            fresh = await self._call(kind, missing)
            for content, verdict in zip(missing, fresh, strict=True):
                found[content] = verdict
                await self.cache.put(content_key(settings.name, settings.model, kind, content),
                                     verdict)
        return found

    async def _call(self, kind: str, contents: list[str]) -> list[Verdict]:
        assert self.client is not None and self.breaker is not None and self._limiter
        client, started, outcome = self.client, time.perf_counter(), "ok"
        try:
            self.breaker.before_call()
        except BreakerOpen as exc:
            self.observer.call_finished(client.name, kind, "breaker_open", 0.0)
            raise ClassifierFailed("breaker_open", str(exc)) from None
        try:
            with trio.fail_after(client.settings.timeout):
                async with self._limiter:
                    if kind == "image":
                        result = [await client.image(contents[0])]
                    else:
                        result = await client.texts(contents)
        except trio.TooSlowError:
            outcome = "timeout"
            raise ClassifierFailed("timeout", f"{client.name} did not answer in time") from None
        except ClassifierFailed as failed:
            outcome = failed.kind
            raise
        except BaseException:  # cancelled with the request: says nothing about the classifier
            outcome = "cancelled"
            raise
        finally:
            if outcome == "ok":
                self.breaker.succeeded()
            elif outcome == "cancelled" or kind == "image":
                # An image's failure may be the caller's doing (a URL that does not answer
                # or is no image): it must not open the breaker for every other request.
                # A classifier that is really down fails the texts too.
                self.breaker.abandoned()
                if outcome != "cancelled":
                    log.warning("classifier %s failed on an image: %s", client.name, outcome)
            else:
                self.breaker.failed()
                log.warning("classifier %s failed: %s", client.name, outcome)
            self.observer.call_finished(client.name, kind, outcome,
                                        time.perf_counter() - started)
        return result


def _counts_for(image: ImagePart, text: str) -> bool:
    return text == "input" or (text == "last_user" and image.in_last_user)


def _outcome(classes: dict[str, Classification], classifier: str, images: int, *,
             unmapped: tuple[str, ...] = ()) -> ModerationOutcome:
    others = {name: c for name, c in classes.items() if name != "input"}
    main = classes["input"]
    classification = Classification(main.categories, main.pii,
                                     by_text=MappingProxyType(others))
    scores = merged(*(c.categories for c in classes.values()))
    return ModerationOutcome(classification, classifier, scores, images,
                             unmapped_codes=unmapped)
