"""The built-in echo upstream: exact OpenAI and Anthropic wire answers without any network.

It answers like the real providers do, byte for byte in shape, so that everything the gateway
does to a provider answer (relaying, injecting `policy`, counting usage) is exercised by the
official SDKs even when no provider key is configured. The reply to a request is
``"echo: " + <last user text>`` (cut to `MAX_ECHO_CHARS`), streamed in a few chunks.

Token counts are an estimate, not a tokenizer: ``ceil(len(text) / 4)`` per text, summed over
every text the request carries (`estimate_tokens`, `input_texts`). The output count is the same
estimate over the reply text. Usage is deterministic, so quota tests can predict it.

The formatting functions are pure: `(body, reply) -> dict` for a JSON answer and
`(body, reply) -> Iterator[bytes]` for a stream, one SSE event per item. `answer()` routes one
HTTP request to them; `EchoTransport` serves `answer()` to an `httpx2.AsyncClient`.
"""

from gateway.upstream.echo.replies import (
    ECHO_MODELS,
    JSON,
    JSON_TYPE,
    MAX_ECHO_CHARS,
    Api,
    Reply,
    estimate_tokens,
    input_texts,
    input_tokens,
    last_user_text,
    split_text,
)
from gateway.upstream.echo.server import Answer, BadRequest, EchoTransport, answer, api_for_path
from gateway.upstream.echo.wire import (
    chat_completion,
    chat_completion_frames,
    error_body,
    message,
    message_frames,
    models_list,
    response,
    response_frames,
    sse,
)

__all__ = [
    "ECHO_MODELS", "JSON", "JSON_TYPE", "MAX_ECHO_CHARS", "Answer", "Api", "BadRequest",
    "EchoTransport", "Reply", "answer", "api_for_path", "chat_completion",
    "chat_completion_frames", "error_body", "estimate_tokens", "input_texts", "input_tokens",
    "last_user_text", "message", "message_frames", "models_list", "response", "response_frames",
    "split_text", "sse",
]
