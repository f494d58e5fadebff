"""The `[moderation]` section: which classifier gives a policy its category facts, and how it
is reached. Parsed strictly (an unknown key is an error: a typo must not silently fall back to
the offline classifier) by `ModerationSettings.from_mapping`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dsl.classifiers import CATEGORIES
from dsl.vocabulary import POLICY_ID

CLASSIFIERS = ("builtin", "openai", "llama-guard", "chain")
#: What happens to image parts when the classifier in force cannot see images.
UNMODERATED_IMAGES = ("on_error", "refuse", "allow")
DEFAULT_ALWAYS_BLOCKED = ("self-harm/instructions", "sexual/minors")

_EXTERNAL_DEFAULTS: dict[str, dict[str, Any]] = {
    "openai": {"base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY",
               "model": "omni-moderation-latest", "images": True, "remote_images": True},
    # A self-hosted model runs next to the gateway: its server would fetch a caller's image
    # URL from inside the operator's network, so it is sent only images given as bytes.
    "llama_guard": {"base_url": "http://127.0.0.1:8000/v1", "api_key_env": "",
                    "model": "meta-llama/Llama-Guard-3-8B", "images": False,
                    "remote_images": False},
}


@dataclass(frozen=True, slots=True)
class ExternalClassifier:
    """One external classifier's table (`[moderation.openai]`, `[moderation.llama_guard]`)."""

    name: str
    base_url: str
    #: The environment variable holding the API key ("" = no key is sent).
    api_key_env: str
    model: str
    #: Seconds one classification call may take, connection included.
    timeout: float = 2.0
    #: Calls in flight at once per worker; more wait their turn (within `timeout`).
    max_concurrency: int = 16
    #: Whether this classifier is sent image parts (OpenAI omni-moderation, Llama Guard 4).
    images: bool = False
    #: Whether images given by a remote URL (not a `data:` URL) are sent too; the classifier
    #: then fetches them itself. Off, they are images the classifier cannot see.
    remote_images: bool = False
    #: Llama Guard only: ask for log-probabilities and score categories with them.
    logprobs: bool = False


@dataclass(frozen=True, slots=True)
class ModerationSettings:
    classifier: str = "builtin"
    always_blocked: tuple[str, ...] = DEFAULT_ALWAYS_BLOCKED
    unmoderated_images: str = "on_error"
    openai: ExternalClassifier = field(default_factory=lambda: _external("openai", {}))
    llama_guard: ExternalClassifier = field(
        default_factory=lambda: _external("llama_guard", {}))
    #: `chain`: which external classifier follows the built-in one.
    chain_external: str = "openai"
    #: `chain`: ids of the policies that ask for the external classifier always (the texts
    #: their category rules read are sent even when the built-in classifier found something).
    chain_policies: frozenset[str] = frozenset()
    #: Entries of the in-memory result cache (0 disables it).
    cache_entries: int = 10_000
    #: Seconds a result stays in the cache shared by replicas (Redis, when `[redis]` is set).
    cache_ttl: int = 86_400
    #: Circuit breaker: consecutive failures that open it, and seconds before one trial call.
    breaker_failures: int = 5
    breaker_cooldown: float = 30.0
    #: Streamed output is classified by an external classifier every this many characters.
    stream_interval_chars: int = 400
    #: Image parts classified per request at most; a request with more is not classified
    #: (its policies' `on_error` decides): one call per image must stay bounded.
    max_images: int = 16

    @property
    def external(self) -> ExternalClassifier | None:
        """The external classifier in force, if any."""
        name = {"openai": "openai", "llama-guard": "llama_guard",
                "chain": self.chain_external}.get(self.classifier)
        if name is None:
            return None
        return self.openai if name == "openai" else self.llama_guard

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ModerationSettings:
        """Raises ValueError naming the offending key."""
        data = dict(data)
        known = {"classifier", "always_blocked", "unmoderated_images", "openai", "llama_guard",
                 "chain_external", "chain_policies", "cache_entries", "cache_ttl",
                 "breaker_failures",
                 "breaker_cooldown",
                 "stream_interval_chars", "max_images"}
        _no_unknown("moderation", data, known)
        classifier = _choice(data.get("classifier", "builtin"), CLASSIFIERS,
                             "moderation.classifier")
        blocked = data.get("always_blocked", list(DEFAULT_ALWAYS_BLOCKED))
        if not isinstance(blocked, list) or not all(isinstance(c, str) for c in blocked):
            raise ValueError("moderation.always_blocked must be a list of category names")
        unknown = sorted(set(blocked) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"moderation.always_blocked names unknown categories {unknown}")
        return cls(
            classifier=classifier, always_blocked=tuple(blocked),
            unmoderated_images=_choice(data.get("unmoderated_images", "on_error"),
                                       UNMODERATED_IMAGES, "moderation.unmoderated_images"),
            openai=_external("openai", _table(data, "openai")),
            llama_guard=_external("llama_guard", _table(data, "llama_guard")),
            chain_external=_choice(data.get("chain_external", "openai"),
                                   ("openai", "llama_guard"), "moderation.chain_external"),
            chain_policies=_policy_ids(data.get("chain_policies", []),
                                       "moderation.chain_policies"),
            cache_entries=_integer(data.get("cache_entries", 10_000), "moderation.cache_entries",
                                   minimum=0),
            cache_ttl=_integer(data.get("cache_ttl", 86_400), "moderation.cache_ttl",
                               minimum=1),
            breaker_failures=_integer(data.get("breaker_failures", 5),
                                      "moderation.breaker_failures", minimum=1),
            breaker_cooldown=_seconds(data.get("breaker_cooldown", 30.0),
                                      "moderation.breaker_cooldown"),
            stream_interval_chars=_integer(data.get("stream_interval_chars", 400),
                                           "moderation.stream_interval_chars", minimum=1),
            max_images=_integer(data.get("max_images", 16), "moderation.max_images", minimum=0),
        )


def _external(name: str, table: Mapping[str, Any]) -> ExternalClassifier:
    where = f"moderation.{name}"
    _no_unknown(where, table, {"base_url", "api_key_env", "model", "timeout", "max_concurrency",
                               "images", "remote_images", "logprobs"})
    spec = {**_EXTERNAL_DEFAULTS[name], **table}
    for key in ("base_url", "api_key_env", "model"):
        if not isinstance(spec[key], str):
            raise ValueError(f"{where}.{key} must be a string")
    for key in ("images", "remote_images", "logprobs"):
        if not isinstance(spec.get(key, False), bool):
            raise ValueError(f"{where}.{key} must be true or false")
    if not spec["base_url"].startswith(("http://", "https://")):
        raise ValueError(f"{where}.base_url must be an http(s) URL")
    return ExternalClassifier(
        name="openai" if name == "openai" else "llama-guard",
        base_url=spec["base_url"].rstrip("/"), api_key_env=spec["api_key_env"],
        model=spec["model"], timeout=_seconds(spec.get("timeout", 2.0), f"{where}.timeout",
                                              positive=True),
        max_concurrency=_integer(spec.get("max_concurrency", 16), f"{where}.max_concurrency",
                                 minimum=1),
        images=spec.get("images", False), remote_images=spec["remote_images"],
        logprobs=spec.get("logprobs", False))


def _policy_ids(value: Any, name: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(
            isinstance(v, str) and POLICY_ID.match(v) for v in value):
        raise ValueError(f"{name} must be a list of policy ids")
    return frozenset(value)


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    table = data.get(key, {})
    if not isinstance(table, Mapping):
        raise ValueError(f"moderation.{key} must be a table")
    return table


def _no_unknown(where: str, data: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in [{where}]; known: {sorted(known)}")


def _choice(value: Any, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, not {value!r}")
    return str(value)


def _integer(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}")
    return value


def _seconds(value: Any, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number of seconds")
    number = float(value)
    if not (number > 0 if positive else number >= 0) or number == float("inf"):
        raise ValueError(f"{name} must be a {'positive' if positive else 'non-negative'} "
                         f"number of seconds")
    return number
