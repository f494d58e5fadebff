"""What every wire API adapter provides. The rest of the gateway is API-neutral and talks to
the three APIs (chat completions, messages, responses) only through this interface."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol

import orjson

from gateway.adapters.inventory import TextInventory
from gateway.errors import GatewayError, InvalidRequest
from gateway.upstream.sse import Frame, encode_frame

JSON = dict[str, Any]


def decode_json_object(body: bytes) -> JSON:
    """The request body as a JSON object, or `InvalidRequest` saying what is wrong with it."""
    if not body.strip():
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"The request body must be a JSON object, not {type(value).__name__}."
        )
    return value


_TYPE_NAMES = {str: "a string", bool: "a boolean", int: "an integer", float: "a number",
               list: "an array", dict: "an object"}


def check_field(body: Mapping[str, Any], name: str, *types: type, required: bool = False,
                non_empty: bool = False) -> None:
    """Raise `InvalidRequest` when `body[name]` is missing (if required) or of the wrong type.

    `bool` is not accepted where a number is expected, although Python treats it as an int.
    """
    if name not in body or body[name] is None:
        if required:
            raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
        return
    value = body[name]
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        expected = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
        raise InvalidRequest(
            f"Invalid type for '{name}': expected {expected}, got {type(value).__name__}.",
            param=name,
        )
    if non_empty and not value:
        raise InvalidRequest(f"'{name}' must not be empty.", param=name)


def check_list_of_objects(body: Mapping[str, Any], name: str) -> None:
    for index, item in enumerate(body[name]):
        if not isinstance(item, dict):
            raise InvalidRequest(
                f"Invalid type for '{name}[{index}]': expected an object, "
                f"got {type(item).__name__}.",
                param=f"{name}[{index}]",
            )


@dataclass(frozen=True, slots=True)
class InputView:
    """What the policy surface reads from a request body (API-neutral)."""

    #: Every text of the request the model reads (the adapter's `input_inventory`: messages,
    #: content parts of every kind, names, tool calls and their arguments, tool results, tool
    #: and schema descriptions, system and instructions, documents, thinking, prediction),
    #: joined with "\n".
    input_text: str
    last_user_text: str
    system_text: str
    message_count: int
    has_tools: bool
    max_output_tokens: int | None
    estimated_input_tokens: int
    #: The arguments of the tool calls the request carries (also part of `input_text`).
    tool_arguments_text: str = ""


class OutputDelta(NamedTuple):
    """A piece of output text in one stream frame (a tuple: one is made per streamed frame)."""

    text: str
    #: Which block of output it belongs to (a text part, a tool call, a thinking block): each
    #: block is decided on its own, and a frame of another block closes the current one.
    block: Hashable
    #: Tool-call arguments: nothing of the block goes out before its verdict (its end), so a
    #: client never acts on part of a call that a rule then stops.
    held: bool = False


class CallFn(Protocol):
    """fn(tool name, arguments JSON text[, server]) -> the arguments to send instead. `server`
    is given only for a call a provider runs on an MCP server (responses `mcp_call`): its
    `server_label`."""

    def __call__(self, name: str, arguments: str, server: str | None = None, /) -> str: ...


class RemoveFn(Protocol):
    """remove(tool name[, server]) -> whether the definition is taken out; `server` as for
    `CallFn` (the `server_label` of a responses `mcp` tool)."""

    def __call__(self, name: str, server: str | None = None, /) -> bool: ...


class ProviderRun(Protocol):
    """What the governed surface decides about the tools a provider runs for the client
    (responses `mcp` tools, run on a remote MCP server the client named)."""

    def result(self, name: str, arguments: str, server: str, text: str) -> Callable[[str], str]:
        """Decide `text`, what the tool `name` (on `server`, called with `arguments`) returned;
        returns how each string of it goes out (redacted, or unchanged)."""
        ...

    def approval(self, name: str, server: str, arguments: str) -> str:
        """Decide the arguments of an approval request as the model's output; returns those
        that go out."""
        ...

    def hides_listed(self, name: str, server: str) -> bool:
        """Whether the tool `name` that `server` offers is taken out of the listed tools."""
        ...

    @property
    def enforced(self) -> bool:
        """Whether listings may change at all (in shadow nothing is taken out)."""
        ...


class NamedCall(NamedTuple):
    """A tool call a stream frame names."""

    #: The block key under which the call's arguments stream.
    block: Hashable
    name: str
    #: Arguments the naming frame itself carries: none from the providers, who stream them
    #: after it; a broken upstream may send some.
    arguments: str = ""
    #: The MCP server of a call the provider runs (responses `mcp_call`: its `server_label`).
    server: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


class Adapter:
    """One wire API. Subclasses live one per module, each holding all of its API's quirks."""

    #: The surface name used as default target and in events: chat.completions|messages|responses.
    surface: ClassVar[str]
    #: Which provider kind serves this API: "openai" or "anthropic".
    provider_kind: ClassVar[str]
    #: Path of the endpoint below the provider's base URL.
    upstream_path: ClassVar[str]
    #: Path of the endpoint below each of the gateway's surface prefixes (`/v1`, `/policy`).
    path: ClassVar[str]
    #: The endpoint's label in metrics and access logs.
    api: ClassVar[str]
    #: Which strings of a request are text the model reads (all but a reasoned exclusion list).
    input_inventory: ClassVar[TextInventory]

    def validate(self, body: JSON) -> None:
        """Raise `InvalidRequest` for a body the API would reject for shape or type reasons."""
        raise NotImplementedError

    def is_stream(self, body: Mapping[str, Any]) -> bool:
        return body.get("stream") is True

    def error_body(self, error: GatewayError) -> JSON:
        """`error` in this API's own error shape (docs/reference.md)."""
        raise NotImplementedError

    def stream_error_frame(self, error: GatewayError, extra: Mapping[str, Any] | None = None
                           ) -> bytes:
        """The frame that ends a stream with `error`, so SDKs raise instead of hanging or
        silently accepting a cut stream."""
        raise NotImplementedError

    def is_terminal(self, frame: Frame) -> bool:
        """Whether `frame` is the API's normal last frame (a stream must end with one)."""
        raise NotImplementedError

    # --- the governed surface (/policy/*): reading and rewriting requests -------------------

    def input_view(self, body: JSON) -> InputView:
        raise NotImplementedError

    def map_input_texts(self, body: JSON, fn: Callable[[str], str]) -> JSON:
        """A copy of `body` with `fn` applied to every input text (for redaction)."""
        raise NotImplementedError

    def with_instruction(self, body: JSON, instruction: str) -> JSON:
        """A copy of `body` with `instruction` added as a system instruction in the API's own
        place (chat: a leading system message; messages: `system`; responses: `instructions`)."""
        raise NotImplementedError

    def prepare_stream(self, body: JSON) -> tuple[JSON, bool]:
        """Make a streamed request report usage; returns (body, whether the client asked)."""
        return body, True

    # --- answers -----------------------------------------------------------------------------

    def holding_reply(self, body: JSON, text: str) -> JSON:
        """A complete non-streamed response in the API's shape whose output is `text`."""
        raise NotImplementedError

    def output_text(self, response: JSON) -> str:
        """The assistant text of a non-streamed response."""
        raise NotImplementedError

    def response_usage(self, response: JSON) -> Usage | None:
        raise NotImplementedError

    def map_output_texts(self, response: JSON, fn: Callable[[str], str]) -> JSON:
        """A copy of a non-streamed response with `fn` applied to every text that
        `output_text` reads (for output redaction)."""
        raise NotImplementedError

    # --- tool calls the model issues, tool definitions the client sends (tool rules) ----------

    def map_tool_calls(self, response: JSON, fn: CallFn) -> JSON:
        """A copy of a non-streamed response with each tool call's arguments (JSON text)
        replaced by `fn(tool name, arguments)`; the response itself when none changes."""
        return response

    def stream_tool_names(self, event: str | None, payload: JSON) -> list[NamedCall]:
        """The tool calls this frame names."""
        return []

    def opened_blocks(self, event: str | None, payload: JSON) -> tuple[Any, int] | None:
        """For APIs whose clients place each block a frame opens after the ones before (and
        apply a delta to the block at the position it names): the position this frame claims
        for the block it opens (None: no claim) and how many blocks it opens."""
        return None

    def map_stream_calls(self, event: str | None, payload: JSON, fn: CallFn
                         ) -> JSON:
        """`payload` (a stream frame) with the arguments of each whole tool call it repeats
        (a response or message snapshot, a "done" item or arguments) replaced by
        `fn(tool name, arguments)`; the payload itself when none changes. Calls the frame names
        (`stream_tool_names`) and argument deltas are not repeated calls."""
        return payload

    def without_tools(self, body: JSON, remove: RemoveFn) -> tuple[JSON, list[str]]:
        """`body` without the tool definitions whose name `remove` says, and their names."""
        return body, []

    def map_provider_tools(self, payload: JSON, run: ProviderRun) -> JSON:
        """`payload` (a whole answer or a stream frame) with what the tools the provider ran
        returned decided by `run` (rewritten as it says), and the tools they listed without
        those it hides; the payload itself when nothing changes."""
        return payload

    # --- streams: one decoded frame at a time ---------------------------------------------------

    def output_delta(self, event: str | None, payload: JSON) -> OutputDelta | None:
        """The output this frame adds, if it is a delta of text the model writes: answer text,
        refusals, tool-call arguments, thinking and reasoning."""
        raise NotImplementedError

    def stream_delta(self, event: str | None, payload: JSON) -> str | None:
        """The output text this frame adds (`output_delta` without its block)."""
        delta = self.output_delta(event, payload)
        return delta.text if delta is not None else None

    def with_stream_delta(self, event: str | None, payload: JSON, text: str) -> JSON:
        """A copy of the delta frame `payload` carrying `text` instead."""
        raise NotImplementedError

    def held_frame(self, event: str | None, payload: JSON) -> JSON | None:
        """What goes out in place of a held delta (tool-call arguments) while its block is
        undecided: None, or the frame without its text when it also carries something the client
        needs at once (chat's first tool-call chunk names the call)."""
        return None

    def split_output(self, event: str | None, payload: JSON) -> list[JSON] | None:
        """One frame per output delta when `payload` carries several (chat chunks can hold text
        and tool calls together); None when it carries at most one."""
        return None

    def is_text_end(self, event: str | None, payload: JSON) -> bool:
        """Whether this frame closes a block of output (held-back text must go out before it,
        because "done" frames may repeat the whole text)."""
        raise NotImplementedError

    def ends_block(self, event: str | None, payload: JSON, block: Hashable) -> bool:
        """Whether `block` is among those a text-end frame (`is_text_end`) closes: all of them,
        unless the API streams blocks side by side (chat's choices)."""
        return True

    def with_released_texts(self, event: str | None, payload: JSON,
                            released: Mapping[Hashable, str]) -> JSON:
        """A frame that repeats whole output blocks (a "done" frame), carrying for each block
        in `released` (block → text) the text actually released to the client (after output
        redaction) instead. Only APIs with such frames override."""
        return payload

    def stream_usage(self, event: str | None, payload: JSON) -> Usage | None:
        """Usage reported by this frame (fields it does not report are 0)."""
        raise NotImplementedError

    def is_usage_only_chunk(self, event: str | None, payload: JSON) -> bool:
        """A frame that exists only to report usage (chat's `choices: []` chunk)."""
        return False

    def sequence_number(self, payload: JSON) -> int | None:
        """The frame's position number, for APIs whose events are numbered (responses)."""
        return None

    def with_sequence_number(self, payload: JSON, number: int) -> JSON:
        """A copy of `payload` numbered `number` (only APIs with numbered events override)."""
        return payload

    def encode_event(self, event: str | None, payload: JSON) -> bytes:
        """One SSE frame in this API's framing."""
        return encode_frame(dumps(payload), event=event)

    def output_refusal_frames(self, template: JSON | None, error: GatewayError,
                              extra: Mapping[str, Any]) -> bytes:
        """Frames that end a stream when an output rule refuses or escalates
        (docs/governed-surface.md), each carrying `extra` (the `policy` object). `template` is the
        last frame seen, for ids."""
        raise NotImplementedError


class OpenAIErrorShape:
    """`{"error": {"message", "type", "param", "code"}}`, shared by chat and responses."""

    def error_body(self, error: GatewayError) -> JSON:
        body: JSON = {
            "error": {
                "message": error.message,
                "type": error.error_type,
                "param": error.param,
                "code": error.code,
            }
        }
        body.update(error.extra)
        return body


def policy_of(extra: Mapping[str, Any]) -> JSON:
    """`{"policy": ...}` from the keys added beside an error, or nothing: for error objects the
    OpenAI SDKs hand to client code without their envelope."""
    return {"policy": extra["policy"]} if "policy" in extra else {}


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


__all__ = [
    "JSON", "Adapter", "OpenAIErrorShape", "check_field", "check_list_of_objects",
    "decode_json_object", "dumps", "encode_frame",
]
