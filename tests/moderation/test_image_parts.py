"""Which image parts of each API's request body go to an image classifier, and which are kept
as images no classifier can be sent (uploaded files, by id)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.moderation.images import ImagePart, image_parts

URL = "https://img.example/a.png"


@pytest.mark.parametrize(("surface", "body", "expected"), [
    ("chat.completions", {"messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": URL}}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "and"},
                                     {"type": "image_url", "image_url": {
                                         "url": "data:image/png;base64,AAA", "detail": "low"}}]},
    ]}, [ImagePart(URL, False), ImagePart("data:image/png;base64,AAA", True)]),
    ("messages", {"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": URL}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                     "data": "BBB"}},
        {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
        {"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "image", "source": {"type": "url", "url": URL + "?t"}}]}]}]},
     [ImagePart(URL, True), ImagePart("data:image/jpeg;base64,BBB", True),
      ImagePart(None, True), ImagePart(URL + "?t", True)]),
    ("responses", {"input": [
        {"role": "user", "content": [{"type": "input_image", "image_url": URL}]},
        {"type": "function_call_output", "call_id": "c", "output": [
            {"type": "input_image", "image_url": "data:image/png;base64,CCC"}]},
        {"role": "user", "content": [{"type": "input_image", "file_id": "file-2"},
                                     {"type": "input_text", "text": "compare"}]}]},
     [ImagePart(URL, False), ImagePart("data:image/png;base64,CCC", False),
      ImagePart(None, True)]),
    ("responses", {"input": "a plain string"}, []),
    ("embeddings", {"input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": URL}]}]}, []),
    ("chat.completions", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": ""}}, "junk", {"type": "image_url"}]}]}, []),
])
def test_image_parts_of_each_api(surface: str, body: dict[str, Any],
                                 expected: list[ImagePart]) -> None:
    assert image_parts(surface, body) == expected
