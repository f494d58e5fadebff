"""Field inventory conformance: every string field of the official SDKs' request types is read
by the adapter's input view, or is on that adapter's exclusion list with a reason.

The request parameter TypedDicts of the installed `openai` and `anthropic` packages are walked
(`sdk_fields.string_fields`); a canary is planted in each string field in turn, in a body that
names every union member on its way (`type`, `role`). When an SDK version adds a field, it is
read (the inventory excludes, it does not include) or this test names it.
"""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.types import message_create_params
from enforcement.sdk_fields import Field, build, string_fields
from openai.types.chat import completion_create_params
from openai.types.responses import response_create_params

from gateway.adapters import CHAT, MESSAGES, RESPONSES
from gateway.adapters.base import Adapter

CANARY = "zqxcanaryzqx"

APIS: dict[str, tuple[Adapter, Any]] = {
    "chat": (CHAT, completion_create_params.CompletionCreateParamsBase),
    "messages": (MESSAGES, message_create_params.MessageCreateParamsBase),
    "responses": (RESPONSES, response_create_params.ResponseCreateParamsBase),
}
FIELDS = [(api, field) for api, (_, params) in APIS.items() for field in string_fields(params)]


def planted(field: Field) -> dict[str, Any]:
    body = build(field, CANARY if field.kind == "str" else {"k": CANARY})
    assert isinstance(body, dict)
    return {"model": "m", **body} if field.path != "model" else body


def test_the_sdks_have_the_fields_this_test_expects() -> None:
    """A walker that found nothing would pass everything."""
    paths = {api: {f.path for a, f in FIELDS if a == api} for api in APIS}
    assert "messages[]<user>.content[]<text>.text" in paths["chat"]
    assert "messages[]<assistant>.tool_calls[]<function>.function.arguments" in paths["chat"]
    assert "messages[]<assistant>.content[]<tool_use>.input" in {
        p.replace("<user>", "<assistant>") for p in paths["messages"]} | paths["messages"]
    assert "input[]<reasoning>.summary[]<summary_text>.text" in paths["responses"]
    assert len(FIELDS) > 300


@pytest.mark.parametrize(("api", "field"), FIELDS, ids=[f"{a}:{f.path}" for a, f in FIELDS])
def test_every_sdk_string_field_is_read_or_excluded_with_a_reason(api: str, field: Field
                                                                    ) -> None:
    adapter = APIS[api][0]
    body = planted(field)
    view = adapter.input_view(body)
    if CANARY in view.input_text:
        # Redaction reaches every field the policy reads.
        redacted = adapter.map_input_texts(body, lambda t: t.replace(CANARY, "[gone]"))
        assert CANARY not in repr(redacted)
        return
    reasons: list[str] = []
    adapter.input_inventory.texts(body, on_skip=lambda text, why: reasons.append(why)
                                  if CANARY in text else None)
    assert reasons, (f"{api} field {field.path} is neither read by the policy nor on the "
                     f"adapter's exclusion list")
    assert all(reason.strip() for reason in reasons)
