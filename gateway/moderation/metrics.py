"""The moderation metrics, in the app's prometheus registry (gateway/http/metrics.py)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

#: A classifier near the request path answers in milliseconds; its timeout is a few seconds.
CLASSIFIER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class PrometheusObserver:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.seconds = Histogram(
            "gateway_classifier_seconds", "Time of one external classifier call, by "
            "classifier, kind (`text`, `image`) and outcome.", ("classifier", "kind", "outcome"),
            buckets=CLASSIFIER_BUCKETS, registry=registry)
        self.errors = Counter(
            "gateway_classifier_errors", "Failed external classifier calls, by classifier and "
            "failure (`timeout`, `http_429`, `malformed`, `breaker_open`, ...); each one made "
            "the policy's on_error decide.", ("classifier", "error"), registry=registry)
        self.cache = Counter(
            "gateway_classifier_cache", "Classification cache look-ups, by classifier and "
            "result (`hit`, `miss`).", ("classifier", "result"), registry=registry)
        self._children: dict[tuple[str, ...], Any] = {}

    def call_finished(self, classifier: str, kind: str, outcome: str, seconds: float) -> None:
        if outcome != "breaker_open":
            self._child(self.seconds, classifier, kind, outcome).observe(seconds)
        if outcome != "ok":
            self._child(self.errors, classifier, outcome).inc()

    def cache_looked_up(self, classifier: str, hit: bool) -> None:
        self._child(self.cache, classifier, "hit" if hit else "miss").inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child
