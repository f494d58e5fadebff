"""Server-sent events, sans-I/O: bytes in, complete frames out.

The parser never touches a socket. The relay feeds it whatever chunks the upstream sends and gets
back whole frames, each with its original bytes, so the compat surface can forward frames
byte-for-byte and the policy surface can rewrite just the `data:` JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import MalformedStream

#: A frame larger than this without a terminating blank line is treated as a broken stream.
DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024




@dataclass(frozen=True, slots=True)
class Frame:
    """One event: its bytes as received (terminator included), its `event:` name and `data:`."""

    raw: bytes
    event: str | None
    data: str | None

    @property
    def is_done(self) -> bool:
        return self.data == "[DONE]"


def parse_frame(raw: bytes) -> Frame:
    event: str | None = None
    data_lines: list[str] = []
    text = raw.decode("utf-8", errors="strict")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Only CR, LF and CRLF end a line in an event stream: `str.splitlines()` would also break
    # on U+2028, U+0085 and others, which JSON carries unescaped inside a string, and read a
    # frame differently from every client.
    for line in text.split("\n"):
        if not line or line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data_lines.append(value)
        # `id:` and `retry:` carry nothing the gateway acts on; they stay in `raw`.
    return Frame(raw=raw, event=event, data="\n".join(data_lines) if data_lines else None)


class SSEParser:
    """Split a byte stream into frames. Feed chunks; call `close()` at end of stream."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_frame_bytes

    def feed(self, chunk: bytes) -> list[Frame]:
        self._buffer += chunk
        if b"\r" in chunk:
            # Rare in practice (both providers use bare LF); normalising keeps one code path.
            self._buffer[:] = self._buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        frames: list[Frame] = []
        start = 0
        buffer = self._buffer
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            raw = bytes(buffer[start : end + 2])
            start = end + 2
            if raw.strip():
                try:
                    frames.append(parse_frame(raw))
                except UnicodeDecodeError as exc:
                    raise MalformedStream("event stream is not valid UTF-8") from exc
        if start:
            del buffer[:start]
        if len(buffer) > self._max:
            raise MalformedStream(f"event frame larger than {self._max} bytes")
        return frames

    def close(self) -> bytes:
        """End of stream. Returns bytes of an unfinished frame (empty when the stream was whole)."""
        rest = bytes(self._buffer).strip()
        self._buffer.clear()
        return rest


def encode_frame(data: str | bytes, event: str | None = None) -> bytes:
    payload = data.encode("utf-8") if isinstance(data, str) else data
    head = b"event: " + event.encode("utf-8") + b"\n" if event else b""
    return head + b"data: " + payload + b"\n\n"
