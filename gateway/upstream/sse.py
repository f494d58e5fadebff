"""Server-sent events, sans-I/O: bytes in, complete frames out.

The parser never touches a socket. The relay feeds it whatever chunks the upstream sends and gets
back whole frames, each with its original bytes, so the compat surface can forward frames
byte-for-byte and the policy surface can rewrite just the `data:` JSON.
"""

from __future__ import annotations

from typing import NamedTuple

from gateway.errors import MalformedStream

#: A frame larger than this without a terminating blank line is treated as a broken stream.
DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024
#: U+FEFF in UTF-8.
BOM = b"\xef\xbb\xbf"




class Frame(NamedTuple):
    """One event: its bytes as received (terminator included), its `event:` name and `data:`.
    A named tuple (immutable, like the frozen dataclass it was) because one is built for every
    relayed frame, and a tuple is built faster."""

    raw: bytes
    event: str | None
    data: str | None

    @property
    def is_done(self) -> bool:
        return self.data == "[DONE]"


def parse_frame(raw: bytes) -> Frame:
    # The two shapes providers send, `data: X` and `event: E` + `data: X` with one data line,
    # without splitting the frame into lines: this runs for every relayed frame.
    end = len(raw) - 2
    if raw.startswith(b"data: "):
        if raw.find(b"\n") == end:
            return Frame(raw=raw, event=None, data=raw[6:end].decode("utf-8"))
    elif raw.startswith(b"event: "):
        line_end = raw.find(b"\n")
        if raw.startswith(b"data: ", line_end + 1) and raw.find(b"\n", line_end + 1) == end:
            return Frame(raw=raw, event=raw[7:line_end].decode("utf-8"),
                         data=raw[line_end + 7:end].decode("utf-8"))
    return _parse_lines(raw)


def _parse_lines(raw: bytes) -> Frame:
    """Any frame, line by line. Lines end at LF, CR LF or CR only (as the SSE format says);
    a U+2028 inside the data is data."""
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
        #: The last chunk ended with CR: an LF starting the next one ends the same line.
        self._after_cr = False
        #: The first bytes of the stream, until they show whether it starts with a byte order
        #: mark (None once they did).
        self._head: bytes | None = b""

    def feed(self, chunk: bytes) -> list[Frame]:
        if not chunk:  # nothing to read, and nothing it could end (a CR before it stays one)
            return []
        if self._head is not None:
            # One leading byte order mark is not part of the stream (as the format says, and
            # as clients read it): kept, it would hide the first field's name from us.
            head = self._head + chunk
            if len(head) < len(BOM) and BOM.startswith(head):
                self._head = head
                return []
            self._head = None
            chunk = head.removeprefix(BOM)
        if self._after_cr:
            self._after_cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        if self._buffer or not chunk.endswith(b"\n\n") or b"\r" in chunk:
            return self._feed_buffered(chunk)
        # The usual read of a relayed stream: whole frames and nothing pending, so they are
        # split from the chunk itself (a single frame is the chunk) instead of a buffer.
        try:
            if chunk.find(b"\n\n") == len(chunk) - 2:
                return [] if chunk.isspace() else [parse_frame(chunk)]
            parts = chunk.split(b"\n\n")
            parts.pop()  # the empty rest after the last blank line
            return [parse_frame(part + b"\n\n") for part in parts
                    if part and not part.isspace()]
        except UnicodeDecodeError as exc:
            raise MalformedStream("event stream is not valid UTF-8") from exc

    def _feed_buffered(self, chunk: bytes) -> list[Frame]:
        self._buffer += chunk
        if b"\r" in chunk:
            self._after_cr = chunk.endswith(b"\r")
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
            if not raw.isspace():
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
        if self._head:  # the stream was the start of a byte order mark and nothing else
            self._buffer += self._head
        self._head = None
        rest = bytes(self._buffer).strip()
        self._buffer.clear()
        return rest


def encode_frame(data: str | bytes, event: str | None = None) -> bytes:
    payload = data.encode("utf-8") if isinstance(data, str) else data
    head = b"event: " + event.encode("utf-8") + b"\n" if event else b""
    return head + b"data: " + payload + b"\n\n"
