"""What the echo upstream answers: the reply to a request, and the token estimates it reports.

The reply to a request is ``"echo: " + <last user text>`` (cut to `MAX_ECHO_CHARS`), streamed
in a few chunks. Token counts are an estimate, not a tokenizer: ``ceil(len(text) / 4)`` per
text, summed over every text the request carries. Usage is deterministic, so quota tests can
predict it.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Api = Literal["chat", "messages", "responses"]
JSON = dict[str, Any]


MAX_ECHO_CHARS = 400
STREAM_CHUNKS = 4
ECHO_MODELS = ("echo",)
#: Fixed so that the model list is identical on every call.
_MODELS_CREATED = 1_735_689_600  # 2025-01-01T00:00:00Z

PATHS: Mapping[str, Api] = {
    "/v1/chat/completions": "chat",
    "/v1/messages": "messages",
    "/v1/responses": "responses",
}
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
MODELS_PATH = "/v1/models"

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream; charset=utf-8"


# -- text and token estimates -------------------------------------------------------------------

def estimate_tokens(text: str) -> int:
    """About four characters per token, rounded up; 0 for the empty text."""
    return math.ceil(len(text) / 4)


def _texts(value: Any) -> list[str]:
    """Every text inside a content value: a string, a list of parts/blocks, or a message.

    Parts carry text in `text`; messages and tool results in `content`; Responses tool outputs
    in `output`. Images, tool-call arguments and other non-text data are not counted.
    """
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for item in value for text in _texts(item)]
    if isinstance(value, dict):
        return [text for key in ("text", "content", "output") if key in value
                for text in _texts(value[key])]
    return []


def input_texts(api: Api, body: Mapping[str, Any]) -> list[str]:
    """The texts whose estimates make up the input token count of a request."""
    if api == "chat":
        return _texts(body.get("messages"))
    if api == "messages":
        return _texts(body.get("system")) + _texts(body.get("messages"))
    return _texts(body.get("instructions")) + _texts(body.get("input"))


def input_tokens(api: Api, body: Mapping[str, Any]) -> int:
    return sum(estimate_tokens(text) for text in input_texts(api, body))


def last_user_text(api: Api, body: Mapping[str, Any]) -> str:
    """The text of the last user message, its parts joined by a space ("" when there is none)."""
    if api == "responses":
        items = body.get("input")
        if isinstance(items, str):
            return items
    else:
        items = body.get("messages")
    if not isinstance(items, list):
        return ""
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user":
            return " ".join(_texts(item.get("content")))
    return ""


def split_text(text: str, parts: int = STREAM_CHUNKS) -> list[str]:
    """`text` cut into at most `parts` non-empty slices of about equal length.

    Cuts fall anywhere, also inside words, as real model tokens do; that is what makes a policy
    term split across two frames possible.
    """
    if not text:
        return []
    size = math.ceil(len(text) / parts)
    return [text[start : start + size] for start in range(0, len(text), size)]


# -- the reply ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Reply:
    """What the upstream answers: the text as streamed chunks, the usage, and stable ids."""

    chunks: tuple[str, ...]
    input_tokens: int
    output_tokens: int
    #: Hex digits shared by every id of this answer (`chatcmpl-…`, `msg_…`, `resp_…`).
    key: str
    created: int
    #: Tool calls the answer makes after its text: (name, arguments as streamed chunks).
    tool_calls: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: Per tool call, the MCP server the provider runs it on (responses `mcp_call` items with
    #: that `server_label`), or None for a call the client runs.
    mcp_servers: tuple[str | None, ...] = ()

    def mcp_server(self, number: int) -> str | None:
        return self.mcp_servers[number] if number < len(self.mcp_servers) else None

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @classmethod
    def for_request(
        cls,
        api: Api,
        body: Mapping[str, Any],
        *,
        text: str | None = None,
        chunks: Sequence[str] | None = None,
        usage: Mapping[str, int] | None = None,
        created: int | None = None,
        tool_calls: Sequence[Mapping[str, Any]] = (),
    ) -> Reply:
        """The reply to `body`: explicit `chunks`, else `text`, else the echo of the last user text.

        `usage` overrides the estimates; it takes `input_tokens`/`output_tokens` or the chat
        names `prompt_tokens`/`completion_tokens`. `tool_calls` are `{"name", "arguments"}`
        objects, the arguments a list of the chunks they stream in (JSON text once joined),
        with `server_label` for a call the provider runs on an MCP server (responses only).
        """
        if chunks is None:
            if text is None:
                text = ("echo: " + last_user_text(api, body))[:MAX_ECHO_CHARS]
            chunks = split_text(text)
        chunks = tuple(chunks)
        usage = usage or {}
        reply_text = "".join(chunks)
        n_in = usage.get("input_tokens", usage.get("prompt_tokens", input_tokens(api, body)))
        n_out = usage.get("output_tokens",
                          usage.get("completion_tokens", estimate_tokens(reply_text)))
        calls = tuple((str(call["name"]), tuple(call["arguments"])) for call in tool_calls)
        servers = tuple(call.get("server_label") for call in tool_calls)
        return cls(chunks=chunks, input_tokens=n_in, output_tokens=n_out, key=uuid.uuid4().hex[:24],
                   created=int(time.time()) if created is None else created, tool_calls=calls,
                   mcp_servers=servers if any(servers) else ())

    def call_id(self, number: int) -> str:
        return f"call_{self.key[:16]}{number}"
