"""A broken or hostile upstream cannot crash the reading of output: every field of every frame
of a tool-calling stream, and of a whole answer, replaced in turn by a value of the wrong type
(a list, which is not even hashable, an object, null) is read without an exception, whether it
is then governed or passed on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from enforcement.test_tool_call_governor import governor
from gateway.upstream import echo
from gateway.upstream.sse import Frame, encode_frame
from tests.core.test_stream_governor import APIS

JSON = dict[str, Any]
WRONG = ([1], {"k": [2]}, None)
REPLY = echo.Reply(chunks=("Hello ", "there."), input_tokens=3, output_tokens=2, key="k",
                   created=1, tool_calls=(("lookup", ('{"q": ', '"x"}')),))


def mutations(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every value inside `value`."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key)
            yield from mutations(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*path, index)
            yield from mutations(item, (*path, index))


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, *rest = path
    if isinstance(value, dict):
        return {**value, head: replaced(value[head], tuple(rest), new)}
    copy = list(value)
    copy[head] = replaced(value[head], tuple(rest), new)
    return copy


def stream_payloads(surface: str) -> list[tuple[str | None, JSON]]:
    body = {"model": "m", "stream_options": {"include_usage": True}}
    out = []
    for raw in APIS[surface][1](body, REPLY):
        if raw.startswith(b"data: [DONE]"):
            continue
        event = raw.split(b"\n")[0][7:].decode() if raw.startswith(b"event:") else None
        data = raw.split(b"data: ", 1)[1].strip()
        out.append((event, orjson.loads(data)))
    return out


@pytest.mark.parametrize("surface", list(APIS))
def test_a_stream_with_any_field_of_the_wrong_type_is_read_without_a_crash(surface: str
                                                                           ) -> None:
    payloads = stream_payloads(surface)
    for number, (_event, payload) in enumerate(payloads):
        for path in mutations(payload):
            for wrong in WRONG:
                gov = governor(surface)
                out = b""
                for other, (other_event, other_payload) in enumerate(payloads):
                    sent = replaced(other_payload, path, wrong) if other == number \
                        else other_payload
                    data = orjson.dumps(sent)
                    frame = Frame(raw=encode_frame(data, other_event), event=other_event,
                                  data=data.decode())
                    out += gov.feed(frame, sent)
                out += gov.finish()
                # Whole frames, each a JSON object with the `policy` object.
                frames = [f for f in out.split(b"\n\n") if f]
                assert frames and out.endswith(b"\n\n")
                assert all(b'"policy":' in f for f in frames if b"[DONE]" not in f)


@pytest.mark.parametrize("surface", list(APIS))
def test_a_whole_answer_with_any_field_of_the_wrong_type_is_read_without_a_crash(
        surface: str) -> None:
    adapter = APIS[surface][0]
    whole = {"chat.completions": echo.chat_completion, "messages": echo.message,
             "responses": echo.response}[surface]({"model": "m"}, REPLY)
    for path in mutations(whole):
        for wrong in WRONG:
            answer = replaced(whole, path, wrong)
            text = adapter.output_text(answer)
            mapped = adapter.map_output_texts(answer, str.upper)
            # Redaction reaches what the policy read (of a tool input, the values, not the
            # property names).
            assert adapter.output_text(mapped).upper() == text.upper()
            adapter.response_usage(answer)
