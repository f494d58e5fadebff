"""Image parts of chat completions and messages request bodies, as URLs a classifier accepts
(a remote URL as given, base64 data as a `data:` URL)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

IMAGE_SURFACES = frozenset({"chat.completions", "messages"})


@dataclass(frozen=True, slots=True)
class ImagePart:
    url: str
    #: In the last user message: its categories count for `last_user` tests too.
    in_last_user: bool


def image_parts(surface: str, body: dict[str, Any]) -> list[ImagePart]:
    """Every image part of the request's messages (tool results included), in order."""
    if surface not in IMAGE_SURFACES:
        return []
    messages = body.get("messages")
    if not isinstance(messages, list):
        return []
    last_user = max((i for i, m in enumerate(messages)
                     if isinstance(m, dict) and m.get("role") == "user"), default=-1)
    found = []
    for index, message in enumerate(messages):
        if isinstance(message, dict):
            for url in _urls(message.get("content")):
                found.append(ImagePart(url, index == last_user))
    return found


def _urls(content: Any) -> Iterator[str]:
    if not isinstance(content, list):
        return
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "image_url":  # chat completions
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str) and url:
                yield url
        elif kind == "image":  # messages
            url = _source_url(part.get("source"))
            if url:
                yield url
        elif kind == "tool_result":
            yield from _urls(part.get("content"))


def _source_url(source: Any) -> str | None:
    if not isinstance(source, dict):
        return None
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        media = source.get("media_type") if isinstance(source.get("media_type"), str) else (
            "image/png")
        return f"data:{media};base64,{source['data']}"
    return None
