"""Errors of what the gateway talks to (an upstream's stream, a webhook destination, the events
database, Redis, a classifier). Never an HTTP answer as such: each caller maps them to its
documented behaviour. The hierarchy is drawn in gateway/errors/__init__.py."""

from __future__ import annotations


class MalformedStream(Exception):
    """The upstream sent bytes that are not a valid event stream. Caused by the upstream."""


class WebhookError(Exception):
    """The webhook destination refused or did not answer. Caused by the destination; the
    connector retries with backoff until it accepts."""


class EventStorageError(Exception):
    """The events database could not be written (locked, full, removed, unwritable). Caused by
    the environment; the writer retries, and the operator should check disk and file."""


class SharedStateUnavailable(Exception):
    """Not an answer: Redis, which holds the state shared by replicas, did not answer a call.
    Each caller turns it into its documented behaviour (`QuotaUnavailable`, fail open, local
    rollout state, no connector delivery)."""


class ClassifierFailed(Exception):
    """An external classifier could not classify (timeout, HTTP error, unreadable answer, open
    circuit breaker). Never answered as such: the policy's `on_error` decides the request, with
    reason code CLASSIFIER_ERROR. `kind` is a short label for metrics and the decision;
    `image`: the call classified an image (whose URL the caller chose)."""

    def __init__(self, kind: str, message: str, *, image: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.image = image


class BreakerOpen(Exception):
    """The circuit breaker is open: the classifier failed repeatedly and is not called until
    its cool-down ends. Becomes a policy evaluation error like any classifier failure."""


class MalformedVerdict(ValueError):
    """A classifier answered something we cannot read. Caused by the classifier or whatever
    answers at its URL; it becomes a policy evaluation error (the policy's `on_error`)."""
