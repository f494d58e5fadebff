"""Escalation targets are configured by the operator, never chosen by a caller
(docs/governed-surface.md).

A policy's `escalation_path` names where an escalated request's event goes:
- a target name from `[escalation.targets]` (`escalation_path "oncall"`): the usual way;
- a URL listed in `[escalation] allowed_urls`, written out in full;
- an e-mail address (`ops@example.com` or `mailto:`): recorded in the event, nothing is sent.

A policy file naming any other URL or name fails its check when loaded (the last good revision
stays in force); an inline policy may name a target or an e-mail address but never a URL. The
notice is the request's own event, delivered by a webhook connector per target (retries with
backoff, at least once, progress in the database: gateway/events/connectors.py).

    [escalation]
    allowed_urls = ["https://hooks.example.com/policy/escalations"]
    [escalation.targets.oncall]
    url = "https://hooks.example.com/oncall"
    headers_env = { authorization = "ONCALL_WEBHOOK_AUTH" }  # header -> variable holding it
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dsl
from gateway.errors import EscalationConfigError

#: Connector names of escalation targets start with this (progress rows, leases, logs).
CONNECTOR_PREFIX = "escalation:"
_DELIVERY_KEYS = {"timeout", "retry_initial", "retry_max"}
#: What a policy's `escalation_path` can spell as a target name (dsl/vocabulary.py).
TARGET_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")




@dataclass(frozen=True, slots=True)
class EscalationTarget:
    name: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EscalationSettings:
    """The parsed `[escalation]` section: every destination a notice may go to."""

    targets: Mapping[str, EscalationTarget] = field(default_factory=dict)
    #: Delivery settings shared by every target's connector.
    delivery: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], env: Mapping[str, str]) -> EscalationSettings:
        unknown = set(data) - {"allowed_urls", "targets"} - _DELIVERY_KEYS
        if unknown:
            raise EscalationConfigError(f"unknown [escalation] key(s) {sorted(unknown)}")
        targets: dict[str, EscalationTarget] = {}
        for name, spec in dict(data.get("targets", {})).items():
            if not isinstance(spec, Mapping) or set(spec) - {"url", "headers_env"}:
                raise EscalationConfigError(f"escalation target {name!r}: give 'url' and "
                                            "optionally 'headers_env'")
            if not TARGET_NAME.fullmatch(name):
                raise EscalationConfigError(f"escalation target name {name!r} must be a "
                                            "plain name (a letter, then letters, digits, "
                                            "'_', '.' or '-'), not a URL or address")
            targets[name] = EscalationTarget(name, _url(spec.get("url"), name),
                                             _headers(name, spec.get("headers_env", {}), env))
        urls = data.get("allowed_urls", [])
        if not isinstance(urls, list):
            raise EscalationConfigError("escalation.allowed_urls must be a list of URLs")
        for url in urls:
            targets[url] = EscalationTarget(url, _url(url, "allowed_urls"))
        delivery = {k: float(data[k]) for k in _DELIVERY_KEYS if k in data}
        if any(v <= 0 for v in delivery.values()):
            raise EscalationConfigError("escalation timeout and retry times must be positive")
        return cls(targets=targets, delivery=delivery)

    def connector_entries(self) -> list[dict[str, Any]]:
        """One webhook connector entry per target (see `gateway.events.connectors`)."""
        return [{"name": CONNECTOR_PREFIX + _connector_suffix(t.name), "type": "webhook",
                 "url": t.url, "headers": dict(t.headers), "escalation_target": t.name,
                 **self.delivery} for t in self.targets.values()]

    def target_of(self, path: str | None) -> str | None:
        """The configured target `path` names (its name), or None (unset, or an address)."""
        if path is None or path not in self.targets:
            return None
        return path

    def shown(self, path: str | None) -> str | None:
        """`path` as answers show it: a target's name, an address; never a URL."""
        if path is None or not is_url(path):
            return path
        return "listed-url" if path in self.targets else None


def is_url(text: str) -> bool:
    return "://" in text


def escalation_problem(policy: dsl.CompiledPolicy, settings: EscalationSettings, *,
                       inline: bool = False) -> str | None:
    """Why `policy`'s escalation path is not allowed here, or None when it is."""
    path = policy.escalation_path
    if path is None or (not is_url(path) and "@" in path):
        return None  # unset, or an e-mail address (recorded, never sent)
    if inline and is_url(path):
        return ("an inline policy may not name an escalation URL; name a target the operator "
                "configured in [escalation.targets]")
    if path in settings.targets:
        return None
    if is_url(path):
        return (f"escalation URL {path!r} is not listed in [escalation] allowed_urls; name a "
                "configured target instead")
    return f"escalation target {path!r} is not configured in [escalation.targets]"


def escalation_diagnostic(policy: dsl.CompiledPolicy, settings: EscalationSettings | None,
                          source: str, filename: str) -> dsl.Diagnostic | None:
    """The load-time check of a policy file's escalation path, as a diagnostic."""
    problem = escalation_problem(policy, settings or EscalationSettings())
    if problem is None:
        return None
    offset = source.find("escalation_path")
    line = source.count("\n", 0, offset) + 1 if offset >= 0 else 1
    column = offset - source.rfind("\n", 0, offset) if offset >= 0 else 1
    return dsl.Diagnostic(filename, line, column, "error", problem,
                          "configure the destination in [escalation] (docs/security.md)")


def _url(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise EscalationConfigError(f"escalation {where}: 'url' must be an http(s) URL")
    return value


def _headers(name: str, spec: Any, env: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(spec, Mapping):
        raise EscalationConfigError(f"escalation target {name!r}: headers_env is a table of "
                                    "header name = environment variable name")
    headers: dict[str, str] = {}
    for header, variable in spec.items():
        value = env.get(str(variable))
        if not value:
            raise EscalationConfigError(f"escalation target {name!r}: environment variable "
                                        f"{variable} (header {header}) is not set")
        headers[str(header)] = value
    return headers


def _connector_suffix(name: str) -> str:
    """A stable, short connector name for a target (a listed URL is hashed, not spelled out)."""
    return ("url-" + hashlib.sha256(name.encode()).hexdigest()[:12]) if is_url(name) else name
