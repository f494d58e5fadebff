"""Governing a stream, sans-I/O: decoded upstream frames in, bytes for the client out
(docs/governed-surface.md).

For each frame the `StreamGovernor`:
- adds the `policy` object to the frame's JSON (spliced in, not re-encoded); a frame without a
  JSON payload goes out only as `[DONE]` or a bare keep-alive comment, never as it came;
- feeds every delta of text the model writes (answer text, refusals, tool-call arguments,
  thinking and reasoning) to an output monitor per block, which holds back only the end of the
  text that could still become a match (dsl/holdback.py) and releases the rest; the frame
  carries what was released;
- holds tool-call arguments whole: none of a call's arguments reaches the client before the
  verdict on the whole call at its block's end, so an agent never acts on part of a call that a
  rule then stops (frames that only carry arguments are withheld, and the arguments go out in one
  delta frame of the same shape at the end); at that end the policy's tool rules decide the call
  (its name, announced by an earlier frame, and its arguments: `ToolJudge`): an enforced refusal
  ends the stream, a redaction rewrites the arguments that go out;
- decides what the tools a provider ran returned and offered (gateway/policy/provider_tools.py)
  in every frame that carries them, before the frame goes out;
- before the frame that closes a block (whose "done" frames may repeat the whole text), it
  finishes the monitor and sends what was held back in a delta frame of the same shape; a delta
  of another block does not close the current one (chat streams choices interleaved);
- when an enforced output rule refuses or escalates, ends the stream with the API's own
  termination frames: the violating text never reaches the client;
- collects the usage the upstream reports and, when the client did not ask for usage, drops the
  usage-only chunk the gateway asked for;
- keeps numbered events (responses' `sequence_number`) contiguous and in order: every frame after
  one the gateway inserted moves up by one, after one it withheld down by one, and a termination
  frame follows the last number.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dsl
from gateway.adapters.base import Adapter, OutputDelta, dumps
from gateway.errors import PolicyRefused
from gateway.policy.governance import Governance, combine
from gateway.policy.lifecycle import StreamCounts
from gateway.policy.monitors import Unwatched
from gateway.policy.provider_tools import ProviderTools
from gateway.policy.stream_calls import ToolCallSteps
from gateway.upstream.sse import Frame, encode_frame

if TYPE_CHECKING:
    from gateway.policy.toolcalls import ToolJudge

MonitorFactory = Callable[[dsl.Decision], Any]
DEFAULT_REFUSAL = "The response was stopped by policy."


@dataclass(slots=True)
class _Block:
    """One block of output being decided: a text part, a tool call, a thinking block."""

    monitor: Any
    #: Tool-call arguments: nothing is sent before the block's end (its verdict).
    held: bool
    #: Tool-call arguments (held when enforced; in shadow only decided).
    tool: bool
    #: The last delta frame of the block, the shape of the frame that sends what was held.
    template: tuple[str | None, dict[str, Any]] | None = None
    #: The tool's name, for a tool call whose name an earlier frame announced.
    name: str | None = None
    #: Text as the upstream sent it, and as released by the monitor (after redaction).
    fed: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)


#: The end of a chat completions stream, as every client reads it.
DONE_FRAME = b"data: [DONE]\n\n"


class StreamGovernor(ToolCallSteps):
    def __init__(self, adapter: Adapter, governance: Governance,
                 monitor_factory: MonitorFactory | None, *, client_asked_usage: bool = True,
                 tool_judge: ToolJudge | None = None):
        self.adapter = adapter
        self.governance = governance
        self._monitor_factory = monitor_factory
        self._judge = tool_judge
        self._provider_tools = (ProviderTools(tool_judge, governance)
                                if tool_judge is not None else None)
        #: Tool calls announced (by block key) whose arguments block has not opened yet.
        self._tool_names: dict[Hashable, str] = {}
        #: The MCP server of each call (by block key) the provider runs (responses `mcp_call`).
        self._tool_servers: dict[Hashable, str | None] = {}
        self._client_asked_usage = client_asked_usage
        #: Open blocks by the adapter's block key (usually one at a time).
        self._blocks: dict[Hashable, _Block] = {}
        #: The stream's first frame (chat's first chunk, `message_start`, `response.created`):
        #: it carries the ids a termination frame must repeat.
        self._first_payload: dict[str, Any] | None = None
        #: Closed blocks whose released text differs from the upstream's (redacted): "done"
        #: frames repeating them must carry what the client got.
        self._redacted: dict[Hashable, str] = {}
        #: Tool calls decided, as (name, server, arguments sent): frames that repeat a call
        #: whole are checked against them (a repeat naming another server is decided again).
        #: And the blocks of the calls already decided.
        self._sent_calls: set[tuple[str, str | None, str]] = set()
        self._closed_tools: set[Hashable] = set()
        #: Blocks opened so far, for APIs whose clients place blocks by the order they open.
        self._opened = 0
        #: Frames the gateway inserted minus frames it withheld, and the last sequence number
        #: the client got.
        self._shift = 0
        self._last_number: int | None = None
        self.input_tokens = 0
        self.output_tokens = 0
        #: True once the upstream reported usage; until then `output_chars` is all we know.
        self.usage_reported = False
        #: Characters of output text the upstream streamed (for an estimate without usage).
        self.output_chars = 0
        #: True once the stream was ended by an output rule; feed nothing more.
        self.stopped = False

    def feed(self, frame: Frame, payload: dict[str, Any] | None) -> bytes:
        if self.stopped:
            return b""
        if payload is None:  # `[DONE]`, a comment, or a frame without data
            out = self._close_all() if frame.is_done and self._blocks else b""
            return out if self.stopped else out + _without_payload(frame)
        adapter, event = self.adapter, frame.event
        if self._first_payload is None:
            self._first_payload = payload
        usage = adapter.stream_usage(event, payload)
        if usage is not None:
            self.usage_reported = True
            self.input_tokens = max(self.input_tokens, usage.input_tokens)
            self.output_tokens = max(self.output_tokens, usage.output_tokens)
            if not self._client_asked_usage and adapter.is_usage_only_chunk(event, payload):
                return b""
        opened = adapter.opened_blocks(event, payload)
        if opened is not None and self._placed_elsewhere(*opened):
            return self._stop_misplaced()
        if self._judge is not None:
            named = adapter.stream_tool_names(event, payload)
            if named:
                out = self._announced(named)
                if self.stopped:
                    return out
        delta = adapter.output_delta(event, payload)
        if delta is None and (self._monitor_factory is not None or self._judge is not None):
            parts = adapter.split_output(event, payload)
            if parts is not None:  # several deltas in one frame: each decided in its block
                out = b""
                for part in parts:
                    out += self._route(event, part, None, adapter.output_delta(event, part))
                    if self.stopped:
                        break
                return out
        return self._route(event, payload, frame, delta)

    def finish(self) -> bytes:
        """The upstream stream ended normally: release whatever is still held back."""
        return self._close_all() if self._blocks and not self.stopped else b""

    @property
    def last_sequence_number(self) -> int | None:
        """The sequence number of the last frame produced (numbered APIs only)."""
        return self._last_number

    def stop_with(self, decision: dsl.Decision, *, last_number: int | None = None) -> bytes:
        """End the stream now for `decision` (an external classifier's window check).
        `last_number`: the last sequence number the client got, when frames produced after it
        were withheld (their window was flagged)."""
        self.governance.update(decision)
        if last_number is not None:
            self._last_number = last_number
        return self._stop()

    def error_extra(self) -> dict[str, Any]:
        """An error frame ending the stream carries the `policy` object too."""
        return {"policy": self.governance.policy_object()}

    def counts(self) -> StreamCounts:
        """What the stream told us about its usage, for settling the quota."""
        return StreamCounts(self.input_tokens, self.output_tokens,
                            usage_reported=self.usage_reported, output_chars=self.output_chars)

    # --- internals

    def _route(self, event: str | None, payload: dict[str, Any], frame: Frame | None,
               delta: OutputDelta | None) -> bytes:
        adapter = self.adapter
        if delta is not None:
            self.output_chars += len(delta.text)
            if self._monitor_factory is not None or (delta.held and self._judge is not None):
                if self._judge is not None:
                    # What the provider's tools returned and listed may ride on a delta frame
                    # too (its `item` or `response`): decided before the frame is sent or kept
                    # as the template of the frames that release the block.
                    payload = self._provider_run(payload)
                    if self.stopped:
                        return self._stop()
                return self._feed_delta(event, payload, delta)
        out = b""
        if self._tool_names and frame is not None:
            out = self._decide_unopened(event, payload, frame)
            if self.stopped:
                return out
        if self._blocks and frame is not None and adapter.is_terminal(frame):
            out = self._close_all()
        elif self._blocks and adapter.is_text_end(event, payload):
            out = self._close_open(ending=(event, payload))
        if self.stopped:
            return out
        outgoing = payload
        if self._redacted:
            outgoing = adapter.with_released_texts(event, payload, self._redacted)
        if self._judge is not None:
            outgoing = adapter.map_stream_calls(event, outgoing, self._repeated_call)
            if self.stopped:
                return out + self._stop()
            # Last: "done" frames get back what the tool rules sent, and output rules' redaction
            # of the provider's results and approvals applies to that.
            outgoing = self._provider_run(outgoing)
            if self.stopped:
                return out + self._stop()
        outgoing = self._renumbered(outgoing)
        if outgoing is not payload or frame is None:
            return out + self._encode(event, outgoing)
        return out + self._with_policy(frame)

    def _feed_delta(self, event: str | None, payload: dict[str, Any], delta: OutputDelta
                    ) -> bytes:
        block = self._blocks.get(delta.block)
        head = b""
        if block is None and delta.held and delta.block in self._closed_tools \
                and self.governance.enforced:
            return self._stop_ambiguous()  # arguments for a call already decided
        if block is None:
            if delta.held:
                # A tool call follows the text it comes after (chat has no frame that closes
                # text before a call): that text is decided and released first.
                head = self._close_open(held=False)
                if self.stopped:
                    return head
            # In shadow nothing is stopped, so nothing needs holding either.
            monitor = (self._monitor_factory(self.governance.decision)
                       if self._monitor_factory is not None else Unwatched())
            name = self._tool_names.pop(delta.block, None) if delta.held else None
            if delta.held and name is None and self._tool_names and self.governance.enforced:
                # Arguments of a call no frame named while another named call has none yet:
                # the client may apply them to that one (by position, not id).
                return head + self._stop_ambiguous()
            block = _Block(monitor, delta.held and self.governance.enforced, delta.held,
                           # A call no frame named (a broken upstream) is decided all the same.
                           name="" if delta.held and name is None else name)
            self._blocks[delta.block] = block
        return head + self._feed_block(event, payload, delta, block)

    def _feed_block(self, event: str | None, payload: dict[str, Any], delta: OutputDelta,
                    block: _Block) -> bytes:
        released, changed = block.monitor.feed(delta.text)
        block.fed.append(delta.text)
        block.released.append(released)
        block.template = (event, payload)
        if changed is not None:
            self._update(changed)
        if block.monitor.stopped:
            # Text that certainly precedes the violation still goes out, then the stop; of a
            # tool call, nothing.
            head = b""
            if released and not block.held:
                head = self._encode(event, self._renumbered(
                    self.adapter.with_stream_delta(event, payload, released)))
            return head + self._stop()
        if block.held:
            placeholder = self.adapter.held_frame(event, payload)
            if placeholder is None:
                if self.adapter.sequence_number(payload) is not None:
                    self._shift -= 1
                return b""
            return self._encode(event, self._renumbered(placeholder))
        if released != delta.text:
            payload = self.adapter.with_stream_delta(event, payload, released)
        return self._encode(event, self._renumbered(payload))

    def _update(self, changed: dsl.Decision) -> None:
        # A monitor knows only its own evidence: keep what was decided since it started (other
        # blocks open beside it, tool calls and provider-run results decided meanwhile).
        self.governance.update(combine(changed, self.governance.decision))

    def _close_all(self) -> bytes:
        return self._close_open()

    def _close_open(self, held: bool | None = None,
                    ending: tuple[str | None, dict[str, Any]] | None = None) -> bytes:
        """Close the open blocks: only those whose `held` is `held` (unless None), and only
        those the text-end frame `ending` ends (unless None)."""
        out = b""
        for key, block in list(self._blocks.items()):
            if held is not None and block.held != held:
                continue
            if ending is not None and not self.adapter.ends_block(*ending, key):
                continue
            out += self._close(key, block)
            del self._blocks[key]
            if self.stopped:
                return out
        return out

    def _close(self, key: Hashable, block: _Block) -> bytes:
        released, changed = block.monitor.finish()
        if changed is not None:
            self._update(changed)
        if block.monitor.stopped or (changed is not None and self.governance.enforced
                                     and changed.decision in ("refuse", "escalate")):
            return self._stop()
        if block.tool and self._escaped_violation(block):
            return self._stop()
        block.released.append(released)
        sent = "".join(block.released)
        if block.name is not None and self._judge is not None:
            sent = self._judged(block.name, "".join(block.fed), sent, self._tool_servers.get(key))
            if self.stopped:
                return self._stop()
        if block.tool:
            # "Done" frames repeating a call carry what was decided, whatever they say.
            self._closed_tools.add(key)
            self._redacted[key] = sent
        elif sent != "".join(block.fed):
            self._redacted[key] = sent
        text = sent if block.held else released
        if not text or block.template is None:
            return b""
        event, template = block.template
        payload = self.adapter.with_stream_delta(event, template, text)
        if self._last_number is not None:
            self._shift += 1
            self._last_number += 1
            payload = self.adapter.with_sequence_number(payload, self._last_number)
        return self._encode(event, payload)

    def _placed_elsewhere(self, claimed: Any, count: int) -> bool:
        """Whether a frame opening `count` blocks claims a position other than the one its
        block takes in the client's copy (where the client would apply its deltas), on a
        governed stream."""
        position, self._opened = self._opened, self._opened + count
        governed = self._judge is not None or self._monitor_factory is not None
        return (governed and self.governance.enforced and claimed is not None
                and claimed != position)

    def _stop_misplaced(self) -> bytes:
        return self._stop_for("OUTPUT_BLOCK_MISPLACED")

    def _stop_for(self, reason: str) -> bytes:
        self.governance.update(dataclasses.replace(self.governance.decision, decision="refuse",
                                                   reason_code=reason))
        return self._stop()

    def _stop(self) -> bytes:
        self.stopped = True
        decision = self.governance.decision
        error = PolicyRefused(decision.obligations.message or DEFAULT_REFUSAL)
        template = self._first_payload
        if template is not None and self._last_number is not None:
            # The termination frame's number follows the last one the client got.
            template = self.adapter.with_sequence_number(template, self._last_number)
        return self.adapter.output_refusal_frames(
            template, error, {"policy": self.governance.policy_object()})

    def _renumbered(self, payload: dict[str, Any]) -> dict[str, Any]:
        """`payload` numbered after the frames the gateway inserted or withheld (itself when
        unchanged)."""
        number = self.adapter.sequence_number(payload)
        if number is None:
            return payload
        self._last_number = number + self._shift
        if not self._shift:
            return payload
        return self.adapter.with_sequence_number(payload, self._last_number)

    def _encode(self, event: str | None, payload: dict[str, Any]) -> bytes:
        return encode_frame(self.governance.with_policy(dumps(payload)), event=event)

    def _with_policy(self, frame: Frame) -> bytes:
        assert frame.data is not None
        return encode_frame(self.governance.with_policy(frame.data.encode("utf-8")),
                            event=frame.event)


def _without_payload(frame: Frame) -> bytes:
    """What the client gets of a frame without a JSON payload: `[DONE]` and keep-alive comments
    in their plain form, nothing else. Never the frame's own bytes: the gateway did not read
    them as a client's parser might (a comment's text past a line separator some clients split
    lines on)."""
    if frame.is_done:
        return DONE_FRAME
    return b":\n\n" if frame.raw.startswith(b":") else b""
