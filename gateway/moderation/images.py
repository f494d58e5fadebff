"""Image parts of chat completions, messages and responses request bodies, as URLs a classifier
accepts (a remote URL as given, base64 data as a `data:` URL). An image referred to by a file
id has no URL a classifier could fetch: it is kept with `url` None, so that it is never taken
for a moderated one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

IMAGE_SURFACES = frozenset({"chat.completions", "messages", "responses"})


@dataclass(frozen=True, slots=True)
class ImagePart:
    #: None: an uploaded file (by id) the classifier cannot be sent.
    url: str | None
    #: In the last user message: its categories count for `last_user` tests too.
    in_last_user: bool


def is_data_url(url: str) -> bool:
    """Whether `url` holds the image itself (a `data:` URL), rather than naming a place to
    fetch it from, whose bytes may differ from one fetch to the next."""
    return url[:5].lower() == "data:"


def image_parts(surface: str, body: dict[str, Any]) -> list[ImagePart]:
    """Every image part of the request's messages or input items (tool results included), in
    order."""
    if surface not in IMAGE_SURFACES:
        return []
    turns = body.get("input" if surface == "responses" else "messages")
    if not isinstance(turns, list):
        return []
    last_user = max((i for i, m in enumerate(turns)
                     if isinstance(m, dict) and m.get("role") == "user"), default=-1)
    found = []
    for index, turn in enumerate(turns):
        if isinstance(turn, dict):
            content = turn.get("output") if turn.get("type") == "function_call_output" else (
                turn.get("content"))
            for url in _urls(content):
                found.append(ImagePart(url, index == last_user))
    return found


def _urls(content: Any) -> Iterator[str | None]:
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
        elif kind == "input_image":  # responses: a URL or data URL, or an uploaded file's id
            url = part.get("image_url")
            if isinstance(url, str) and url:
                yield url
            elif part.get("file_id"):
                yield None
        elif kind == "image":  # messages
            yield from _source_url(part.get("source"))
        elif kind == "tool_result":
            yield from _urls(part.get("content"))


def _source_url(source: Any) -> Iterator[str | None]:
    if not isinstance(source, dict):
        return
    kind = source.get("type")
    if kind == "url" and isinstance(source.get("url"), str):
        yield str(source["url"])
    elif kind == "base64" and isinstance(source.get("data"), str):
        media = source.get("media_type") if isinstance(source.get("media_type"), str) else (
            "image/png")
        yield f"data:{media};base64,{source['data']}"
    elif kind == "file":  # an uploaded file, by id
        yield None
