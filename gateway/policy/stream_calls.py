"""The tool-call steps of governing a stream (gateway/policy/stream.py), sans-I/O.

A `StreamGovernor` holds a model's tool-call arguments whole and decides each call at its
block's end; these are the steps that touch tool calls only: noting the calls a frame names,
deciding a call (its tool rules through the `ToolJudge`), checking a frame that repeats a call
whole against what was decided (on the same server), deciding the calls whose arguments never
streamed, and what the tools a provider ran returned and listed. They share the governor's state
(the mixin declares what it reads) and end the stream through its `_stop`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

import dsl
from gateway.adapters.base import Adapter, NamedCall
from gateway.adapters.inventory import unescaped_json_text
from gateway.policy.governance import Governance
from gateway.upstream.sse import Frame

if TYPE_CHECKING:
    from gateway.policy.provider_tools import ProviderTools
    from gateway.policy.stream import _Block
    from gateway.policy.toolcalls import ToolJudge


class ToolCallSteps:
    """The tool-call half of `StreamGovernor` (which initialises this state)."""

    adapter: Adapter
    governance: Governance
    stopped: bool
    _judge: ToolJudge | None
    _provider_tools: ProviderTools | None
    _monitor_factory: Callable[[dsl.Decision], Any] | None
    _blocks: dict[Hashable, _Block]
    _tool_names: dict[Hashable, str]
    _tool_servers: dict[Hashable, str | None]
    _redacted: dict[Hashable, str]
    _sent_calls: set[tuple[str, str | None, str]]
    _closed_tools: set[Hashable]

    def _stop(self) -> bytes:
        raise NotImplementedError  # the governor's: the API's termination frames

    def _stop_for(self, reason: str) -> bytes:
        raise NotImplementedError

    def _update(self, changed: dsl.Decision) -> None:
        raise NotImplementedError

    def _judged(self, name: str, fed: str, sent: str, server: str | None = None) -> str:
        """The arguments of the tool call `name` (on MCP `server`: run by the provider) that go
        out, once its tool rules decided it (`self.stopped` when an enforced rule refuses it)."""
        assert self._judge is not None
        verdict = self._judge.decide_into(self.governance, name, fed, server)
        self.stopped = self.stopped or verdict.stopped
        if verdict.arguments != fed:
            # Redacted: an output rule may have redacted the text already; redact what it left.
            sent = verdict.arguments if sent == fed else self._judge.redacted(verdict, sent)
        self._sent_calls.add((name, self._server_of(server), sent))
        return sent

    def _repeated_call(self, name: str, arguments: str, server: str | None = None) -> str:
        """A tool call a frame repeats whole (a snapshot, a "done" item): as sent when it was
        decided (a frame that does not name the tool matches on the arguments), else decided
        now, as the client reads it there."""
        resolved_server = self._server_of(server)
        if (name, resolved_server, arguments) in self._sent_calls or (not name and any(
                sent == arguments and resolved_server in (None, decided_on)  # None: names none
                for _, decided_on, sent in self._sent_calls)):
            return arguments
        return self._judged(name, arguments, arguments, server)

    def _server_of(self, label: str | None) -> str | None:
        """The server a provider-run call's label stands for (None: not a provider's call)."""
        return None if label is None or self._judge is None else self._judge.server_of(label)

    def _provider_run(self, payload: dict[str, Any]) -> dict[str, Any]:
        """`payload` with what the provider's tools returned and listed decided."""
        run = self._provider_tools
        assert run is not None
        mapped = self.adapter.map_provider_tools(payload, run)
        self.stopped = self.stopped or run.stopped
        return mapped

    def _stop_ambiguous(self) -> bytes:
        """A call clients may read otherwise than it would be decided (renamed while its
        arguments stream, arguments after its end or for another call) ends an enforced
        stream (in shadow it goes out as it came)."""
        return self._stop_for("TOOL_CALL_AMBIGUOUS")

    def _announced(self, named: list[NamedCall]) -> bytes:
        """Note the calls a frame names. Arguments that come with the name (a broken
        upstream's) are decided before the frame goes out, and as that frame is not rewritten,
        a verdict that would rewrite them stops the stream."""
        assert self._judge is not None
        for call in named:
            if self._tool_servers.setdefault(call.block, call.server) != call.server \
                    and self.governance.enforced:
                return self._stop_ambiguous()  # one call, two MCP servers
            block = self._blocks.get(call.block)
            if block is not None and block.tool:
                # Named again while its arguments stream: a new name (clients keep the first,
                # the last, or both) or arguments in the naming frame cannot be decided as read.
                if self.governance.enforced and (
                        call.arguments or (block.name and block.name != call.name)):
                    return self._stop_ambiguous()
                block.name = block.name or call.name  # named after its first arguments
                continue
            pending = self._tool_names.get(call.block)
            if pending is not None and pending != call.name and self.governance.enforced:
                return self._stop_ambiguous()  # two names for one call before its arguments
            if not call.arguments:
                self._tool_names[call.block] = call.name
                continue
            sent = self._judged(call.name, call.arguments, call.arguments, call.server)
            if not self.stopped and sent != call.arguments:
                self.governance.update(self._judge.unrewritable(self.governance.decision))
                self.stopped = True
            if self.stopped:
                return self._stop()
            # Decided whole: more arguments for it (which clients append) end the stream.
            self._closed_tools.add(call.block)
            self._redacted[call.block] = sent
        return b""

    def _decide_unopened(self, event: str | None, payload: dict[str, Any], frame: Frame
                         ) -> bytes:
        """Tool calls a frame named but whose arguments never streamed, decided (with no
        arguments) when the frame that ends them comes. What the client gets of their
        arguments is that: none, also where a "done" frame repeats arguments that never
        streamed."""
        adapter = self.adapter
        terminal = adapter.is_terminal(frame)
        if not terminal and not adapter.is_text_end(event, payload):
            return b""
        for key, name in list(self._tool_names.items()):
            if key in self._blocks or not (terminal or adapter.ends_block(event, payload, key)):
                continue
            del self._tool_names[key]
            self._judged(name, "", "", self._tool_servers.get(key))
            if self.stopped:
                return self._stop()
            self._redacted[key] = ""
            self._closed_tools.add(key)
        return b""

    def _escaped_violation(self, block: _Block) -> bool:
        """Whether a tool call's arguments, decoded from JSON, break a rule that their escaped
        spelling (`\\u0061gent`) hid from the monitor. Checked once, at the call's end."""
        unescaped = unescaped_json_text("".join(block.fed))
        if unescaped is None or self._monitor_factory is None:
            return False
        probe = self._monitor_factory(self.governance.decision)
        _, fed_changed = probe.feed(unescaped)
        _, changed = probe.finish()
        changed = changed or fed_changed
        if changed is not None:
            self._update(changed)
        return bool(probe.stopped)
