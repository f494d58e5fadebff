"""Field inventory conformance: every string field of the official SDKs' request types is read
by the adapter's input view, or is on that adapter's exclusion list with a reason.

The request parameter TypedDicts of the installed `openai` and `anthropic` packages are walked
(`sdk_fields.string_fields`); a canary is planted in each string field in turn, in a body that
names every union member on its way (`type`, `role`). When an SDK version adds a field, it is
read at once (the inventories exclude, they do not include), and
`test_the_sdk_fields_are_the_reviewed_ones` fails until someone reviewed it against the exclusion
lists and regenerated `sdk_fields.txt`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from enforcement.sdk_fields import Field, build, reviewed_listing, sdk_params, string_fields
from gateway.adapters import CHAT, MESSAGES, RESPONSES
from gateway.adapters.base import Adapter
from gateway.errors import InvalidRequest

CANARY = "zqxcanaryzqx"

APIS: dict[str, tuple[Adapter, Any]] = {
    api: ({"chat": CHAT, "messages": MESSAGES, "responses": RESPONSES}[api], params)
    for api, params in sdk_params().items()}
FIELDS = [(api, field) for api, (_, params) in APIS.items() for field in string_fields(params)]


def planted(field: Field) -> dict[str, Any]:
    body = build(field, CANARY if field.kind == "str" else {"k": CANARY})
    assert isinstance(body, dict)
    return {"model": "m", **body} if field.path != "model" else body


def test_the_sdk_fields_are_the_reviewed_ones() -> None:
    """A new SDK version's new fields are policy input at once (the inventories exclude, they
    do not include). This test makes sure someone looks: review the new fields (is one a
    credential, an id, binary data, to exclude with a reason?), then regenerate the listing."""
    reviewed = (Path(__file__).parent / "sdk_fields.txt").read_text()
    new = sorted(set(reviewed_listing().splitlines()) - set(reviewed.splitlines()))
    gone = sorted(set(reviewed.splitlines()) - set(reviewed_listing().splitlines()))
    assert (new, gone) == ([], []), "the SDKs' request fields changed: review, then regenerate"


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


DOC = Path(__file__).parents[2] / "docs" / "governed-surface.md"


@pytest.mark.parametrize("api", list(APIS))
def test_the_documented_exclusion_lists_are_the_adapters(api: str) -> None:
    text = DOC.read_text().replace("\\|", "|")
    inventory = APIS[api][0].input_inventory
    for pattern, reason in inventory.exclusions.items():
        assert f"| `{pattern}` | {reason} |" in text, pattern
    for pattern in inventory.free_form:
        assert f"`{pattern}`" in text, pattern


EXCLUDED_SAMPLES = {
    "chat": {"model": "m", "user": CANARY, "metadata": {"k": CANARY}, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": CANARY}}]}]},
    "messages": {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": CANARY}},
        {"type": "thinking", "thinking": "t", "signature": CANARY}]}]},
    "responses": {"model": "m", "input": [{"type": "reasoning", "id": "r",
                                           "encrypted_content": CANARY, "summary": []}],
                  "tools": [{"type": "mcp", "server_label": "s", "authorization": CANARY}]},
}


@pytest.mark.parametrize("api", list(APIS))
def test_excluded_fields_are_really_left_out(api: str) -> None:
    """Base64 bytes, signatures and credentials are not policy input (nor redacted)."""
    adapter = APIS[api][0]
    body = EXCLUDED_SAMPLES[api]
    assert CANARY not in adapter.input_view(body).input_text
    assert adapter.map_input_texts(body, lambda t: t.replace(CANARY, "x")) == body


def test_a_body_nested_deeper_than_the_walk_goes_is_refused_not_half_read() -> None:
    deep: Any = CANARY
    for _ in range(300):
        deep = [deep]
    with pytest.raises(InvalidRequest):
        CHAT.input_view({"model": "m", "messages": [{"role": "user", "content": "x",
                                                     "extra": deep}]})


def test_json_escapes_in_tool_call_arguments_do_not_hide_a_term() -> None:
    body = {"model": "m", "messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function",
         "function": {"name": "f", "arguments": '{"q": "nerve \\u0061gent"}'}}]}]}
    view = CHAT.input_view(body)
    assert "nerve agent" in view.input_text
    # The estimate counts what is sent ("f": 1, the arguments: 26 characters, 7), not the
    # decoded copy.
    assert view.estimated_input_tokens == 1 + 7
    plain = {"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f",
                                      "arguments": '{"q": "nothing escaped"}'}]}
    assert RESPONSES.input_view(plain).input_text == 'f\n{"q": "nothing escaped"}'


def with_types(value: Any, wrong: Any) -> Any:
    """`value` with every `type` replaced by `wrong`."""
    if isinstance(value, dict):
        return {k: wrong if k == "type" else with_types(v, wrong) for k, v in value.items()}
    if isinstance(value, list):
        return [with_types(v, wrong) for v in value]
    return value


@pytest.mark.parametrize("api", list(APIS))
def test_a_type_of_the_wrong_type_does_not_crash_the_walk(api: str) -> None:
    """A client may send any JSON value as `type` (a list is not even hashable)."""
    adapter = APIS[api][0]
    for field_api, field in FIELDS:
        if field_api != api:
            continue
        for wrong in ([1], {"k": 1}, None, 3):
            body = with_types(planted(field), wrong)
            view = adapter.input_view(body)
            mapped = adapter.map_input_texts(body, str.upper)
            # With no `type` to go by, conditional exclusions do not apply: more is read.
            assert (CANARY in view.input_text) == (CANARY.upper() in repr(mapped))
