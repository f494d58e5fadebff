"""Per-request governance values of the `/policy/*` surface, free of I/O.

- `read_gateway_fields`: the caller's gateway fields (docs/security.md), headers winning over the
  body, and the body without them (the upstream never sees a field it does not know).
- `combine`: the project's and an inline policy's decisions, the more severe winning
  (docs/governed-surface.md); `escalation_paths`: the escalation notices of every one of them, kept
  whoever wins.
- `Governance`: everything decided about one request, and the `policy` object
  (docs/governed-surface.md) that every response and every SSE frame carries.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

import dsl
from gateway.errors import InvalidRequest, PolicyIdMismatch
from gateway.labels import unsafe_character

#: Tool-call verdicts listed in a `policy` object (which every frame of a stream carries): a
#: stream of thousands of calls must not make every frame carry thousands. The rest are counted.
MAX_LISTED_TOOL_CALLS = 64
#: Body fields read by the gateway and removed before forwarding.
GATEWAY_BODY_FIELDS = ("policy_project_id", "policy_target", "policy_user", "policy_user_id",
                       "policy_id", "policyId", "policy", "flagged_categories")
#: Headers read by `read_gateway_fields` (the body fields above are their aliases).
GATEWAY_HEADERS = ("x-policy-project", "x-policy-target", "x-policy-user")
#: Categories a request may ask to block for itself (docs/classifiers.md).
REQUEST_FLAGGABLE = frozenset({"harassment", "hate", "illicit", "sexual"})
MAX_LABEL_LENGTH = 256


@dataclass(frozen=True, slots=True)
class GatewayFields:
    project_id: str | None = None
    target: str | None = None
    policy_user: str | None = None
    expected_policy_id: str | None = None
    inline_policy: Any = None
    flagged_categories: frozenset[str] = frozenset()


NO_GATEWAY_FIELDS = GatewayFields()


def _label(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"Invalid type for '{name}': expected a string.", param=name)
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_LABEL_LENGTH:
        raise InvalidRequest(
            f"'{name}' must be at most {MAX_LABEL_LENGTH} printable characters.", param=name)
    unsafe = unsafe_character(value)
    if unsafe is not None:
        raise InvalidRequest(
            f"'{name}' may not contain control, bidirectional-override or line-separator "
            f"characters (found U+{ord(unsafe):04X}).", param=name)
    return value


def _header_text(value: str | None) -> str | None:
    """A header value as the client meant it: the ASGI server hands us latin-1 text, but clients
    send non-ASCII labels as UTF-8, and the same label must mean the same in a header and in
    the body."""
    if value is None or value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def read_gateway_fields(headers: Mapping[str, str], body: dict[str, Any]
                        ) -> tuple[GatewayFields, dict[str, Any]]:
    """The gateway fields of the request and the body to forward (a copy without them)."""
    if not any(name in headers for name in GATEWAY_HEADERS) and not any(
            name in body for name in GATEWAY_BODY_FIELDS):
        return NO_GATEWAY_FIELDS, dict(body)  # the common case: nothing to read or check
    forward = {k: v for k, v in body.items() if k not in GATEWAY_BODY_FIELDS}

    def pick(header: str, *aliases: str) -> str | None:
        # Every given source is checked (a wrong type is a bad request even when the header
        # wins); a blank header or a null body field counts as not given.
        values = [_label(_header_text(headers.get(header)), header),
                  *(_label(body.get(alias), alias) for alias in aliases)]
        return next((value for value in values if value is not None), None)

    flagged = body.get("flagged_categories")
    if flagged is None:
        categories: frozenset[str] = frozenset()
    elif not isinstance(flagged, list) or not all(isinstance(c, str) for c in flagged):
        raise InvalidRequest("'flagged_categories' must be a list of category names.",
                             param="flagged_categories")
    else:
        unknown = sorted(set(flagged) - REQUEST_FLAGGABLE)
        if unknown:
            raise InvalidRequest(
                f"'flagged_categories' may name {sorted(REQUEST_FLAGGABLE)}, not {unknown}.",
                param="flagged_categories")
        categories = frozenset(flagged)
    expected = {value for name in ("policy_id", "policyId")
                if (value := _label(body.get(name), name)) is not None}
    if len(expected) > 1:
        raise PolicyIdMismatch("'policy_id' and 'policyId' name different policies.",
                               param="policy_id")
    fields = GatewayFields(
        project_id=pick("x-policy-project", "policy_project_id"),
        target=pick("x-policy-target", "policy_target"),
        policy_user=pick("x-policy-user", "policy_user", "policy_user_id"),
        expected_policy_id=next(iter(expected), None),
        inline_policy=body.get("policy"),
        flagged_categories=categories,
    )
    return fields, forward


def encode_body(body: Mapping[str, Any]) -> bytes:
    """A request body as JSON again, to forward it. orjson decodes up to 1024 levels of nesting
    but encodes only 254, so a body nested deeper than that is refused as the caller's error."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError as exc:
        raise InvalidRequest(f"The request body cannot be forwarded: {exc} (JSON nested more "
                             f"than 254 levels deep).") from None


def _union(*lists: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for items in lists for item in items))


def escalation_paths(decisions: list[dsl.Decision]) -> tuple[str, ...]:
    """The escalation path of every decision that escalated, whichever decision won: a
    caller's inline refusal must not cancel the project policy's escalation notice."""
    return tuple(dict.fromkeys(d.obligations.escalation_path for d in decisions
                               if d.decision == "escalate" and d.obligations.escalation_path))


def combine(primary: dsl.Decision, other: dsl.Decision | None) -> dsl.Decision:
    """The more severe of two decisions (ties keep `primary`), with hits and redactions of both.
    A caller's inline policy can therefore only tighten a project's governance."""
    if other is None:
        return primary
    winner = other if other.severity > primary.severity else primary
    spans = dict(primary.redacted_spans)
    for kind, count in other.redacted_spans.items():
        spans[kind] = max(spans.get(kind, 0), count)
    redactor = primary.obligations.redactor
    if other.obligations.redactor is not None:
        redactor = (other.obligations.redactor if redactor is None
                    else redactor.merged_with(other.obligations.redactor))
    return dataclasses.replace(
        winner,
        fired_rules=_union(primary.fired_rules, other.fired_rules),
        triggered_categories=_union(primary.triggered_categories, other.triggered_categories),
        allowlist_hits=_union(primary.allowlist_hits, other.allowlist_hits),
        denylist_hits=_union(primary.denylist_hits, other.denylist_hits),
        redacted_spans=MappingProxyType(spans),
        error=winner.error or primary.error or other.error,
        obligations=dataclasses.replace(winner.obligations, redactor=redactor),
    )


@dataclass(slots=True)
class Governance:
    """What the gateway decided about one request; `decision` changes when output rules fire."""

    policy_id: str
    policy_revision: int
    policy_name: str
    data_classification: str | None
    project_id: str
    project_label: str
    account_id: str
    user_id: str
    policy_target: str
    policy_user: str | None
    quota_subject: str
    surface: str
    model: str
    stream: bool
    decision: dsl.Decision
    enforced: bool
    rollout_mode: str
    quota: dict[str, Any] | None = None
    #: Escalation paths of every policy that escalated (notified when enforced).
    escalations: tuple[str, ...] = ()
    #: Which classifier decided and the category scores it found (never the text).
    moderation: dict[str, Any] | None = None
    #: The verdict on each tool call the model issued (name and decision, never arguments).
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    #: Tool calls decided beyond the first `MAX_LISTED_TOOL_CALLS`.
    tool_calls_unlisted: int = 0
    #: Tool definitions the policy took out of the request before the model saw it.
    tools_removed: tuple[str, ...] = ()
    _encoded: bytes | None = field(default=None, repr=False)

    @property
    def effective_decision(self) -> str:
        return self.decision.decision if self.enforced else "allow"

    def update(self, decision: dsl.Decision) -> None:
        self.decision = decision
        self._encoded = None

    def note_tool_call(self, record: dict[str, Any]) -> None:
        if len(self.tool_calls) < MAX_LISTED_TOOL_CALLS:
            self.tool_calls.append(record)
        else:
            self.tool_calls_unlisted += 1
        self._encoded = None

    def note_tools_removed(self, names: list[str]) -> None:
        """Tools taken out of what the model or the client sees, each named once."""
        self.tools_removed = tuple(dict.fromkeys((*self.tools_removed, *names)))
        self._encoded = None

    def policy_object(self) -> dict[str, Any]:
        d = self.decision
        found = {
            "policy_id": self.policy_id,
            "policy_revision": self.policy_revision,
            "decision": d.decision,
            "effective_decision": self.effective_decision,
            "enforced": self.enforced,
            "rollout_mode": self.rollout_mode,
            "reason_code": d.reason_code,
            "triggered_categories": list(d.triggered_categories),
            "allowlist_hits": list(d.allowlist_hits),
            "denylist_hits": list(d.denylist_hits),
            "redacted_spans": dict(d.redacted_spans),
            "policy_target": self.policy_target,
            "policy_user": self.policy_user,
            "project_id": self.project_id,
            "quota": self.quota,
            "stage": d.stage,
        }
        # Said only when there is something to say, so answers without tools keep their shape.
        if self.tool_calls:
            found["tool_calls"] = list(self.tool_calls)
        if self.tool_calls_unlisted:
            found["tool_calls_unlisted"] = self.tool_calls_unlisted
        if self.tools_removed:
            found["tools_removed"] = list(self.tools_removed)
        moderation = self.moderation
        if moderation is not None and (moderation["classifier"] != "builtin"
                                       or moderation["error"] or "output" in moderation):
            # Said whenever it tells the client something: another classifier decided, or
            # the classification failed. Events always record it.
            found["moderation"] = _shown_moderation(moderation)
        return found

    def encoded_policy(self) -> bytes:
        """The `policy` object as JSON, encoded once per decision (it goes into every frame)."""
        if self._encoded is None:
            self._encoded = orjson.dumps(self.policy_object())
        return self._encoded

    def with_policy(self, data: bytes) -> bytes:
        """`data` (a JSON object's bytes) with `"policy": {...}` added as its last key, spliced
        without decoding and re-encoding the frame."""
        body = data.rstrip()
        if not body.endswith(b"}"):
            raise ValueError("not a JSON object")
        inner = body[:-1].rstrip()
        separator = b"" if inner.endswith(b"{") else b","
        return inner + separator + b'"policy":' + self.encoded_policy() + b"}"


def _shown_moderation(moderation: dict[str, Any]) -> dict[str, Any]:
    """The `moderation` record as the caller sees it: when classifying an image failed, the
    failure's kind depends on where the caller's image URL pointed (a timeout, a refused
    connection, an HTTP status), so the caller is told only that it failed; the event keeps
    the kind."""
    if moderation.get("failed_part") != "image":
        return moderation
    shown = {key: value for key, value in moderation.items() if key != "failed_part"}
    shown["error"] = "image_classification_failed"
    return shown
