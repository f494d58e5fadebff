"""The SSE parser is a sans-I/O state machine: bytes in, exact frames out."""

import pytest

from gateway.errors import MalformedStream
from gateway.upstream.sse import Frame, SSEParser, encode_frame, parse_frame


def frames_of(chunks: list[bytes]) -> list[tuple[str | None, str | None]]:
    parser = SSEParser()
    out = []
    for chunk in chunks:
        out.extend((f.event, f.data) for f in parser.feed(chunk))
    assert parser.close() == b""
    return out


def test_whole_frames_in_one_chunk():
    stream = b'event: message_start\ndata: {"a":1}\n\ndata: [DONE]\n\n'
    assert frames_of([stream]) == [("message_start", '{"a":1}'), (None, "[DONE]")]


def test_every_split_point_gives_the_same_frames():
    stream = b'event: ping\ndata: {"type":"ping"}\n\ndata: {"x":"y"}\n\n: comment\n\ndata: [DONE]\n\n'
    expected = frames_of([stream])
    # A comment-only frame is kept (data None) so keep-alive comments are relayed too.
    assert expected == [("ping", '{"type":"ping"}'), (None, '{"x":"y"}'), (None, None),
                        (None, "[DONE]")]
    for cut in range(1, len(stream)):
        assert frames_of([stream[:cut], stream[cut:]]) == expected, cut


def test_byte_at_a_time_keeps_multibyte_utf8_intact():
    stream = 'data: {"t":"héllo ✓"}\n\n'.encode()
    assert frames_of([bytes([b]) for b in stream]) == [(None, '{"t":"héllo ✓"}')]


def test_crlf_and_multiline_data():
    stream = b"event: e\r\ndata: line1\r\ndata: line2\r\n\r\n"
    assert frames_of([stream]) == [("e", "line1\nline2")]


def test_raw_bytes_are_kept_for_byte_exact_relay():
    parser = SSEParser()
    stream = b'event: x\ndata: {"k": 1}\nid: 7\n\n'
    (frame,) = parser.feed(stream)
    assert frame.raw == stream


def test_unfinished_frame_is_reported_at_close():
    parser = SSEParser()
    assert parser.feed(b'data: {"a":1}\n\ndata: {"b"') == [Frame(b'data: {"a":1}\n\n', None, '{"a":1}')]
    assert parser.close() == b'data: {"b"'


def test_oversized_frame_is_malformed():
    parser = SSEParser(max_frame_bytes=64)
    with pytest.raises(MalformedStream):
        parser.feed(b"data: " + b"x" * 100)


def test_invalid_utf8_is_malformed():
    with pytest.raises(MalformedStream):
        SSEParser().feed(b"data: \xff\xfe\n\n")


def test_encode_parse_round_trip():
    raw = encode_frame('{"a":1}', event="content_block_delta")
    assert raw == b'event: content_block_delta\ndata: {"a":1}\n\n'
    assert parse_frame(raw) == Frame(raw, "content_block_delta", '{"a":1}')


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c",
                                       "\x1d", "\x1e"])
def test_only_cr_and_lf_end_a_line(separator: str):
    # JSON carries these unescaped inside a string; a line break there would cut the data.
    data = '{"text":"a' + separator + 'b"}'
    assert frames_of([("data: " + data + "\n\n").encode()]) == [(None, data)]
    assert parse_frame(("event: x" + separator + "y\ndata: 1\n\n").encode()).event == (
        "x" + separator + "y")


@pytest.mark.parametrize("terminator", [b"\r\n", b"\r", b"\n"])
def test_every_line_terminator_of_the_spec(terminator: bytes):
    raw = terminator.join([b"event: e", b"data: a", b"data: b", b"", b""])
    assert frames_of([raw]) == [("e", "a\nb")]
    assert parse_frame(raw) == Frame(raw, "e", "a\nb")


def test_a_line_separator_inside_the_data_is_data():
    # Only LF, CR LF and CR end a line of an event stream; U+2028 may stand raw in a JSON string.
    raw = 'data: {"t":"a\u2028b\u0085c"}\n\n'.encode()
    assert frames_of([raw]) == [(None, '{"t":"a\u2028b\u0085c"}')]


@pytest.mark.parametrize("raw", [
    b'data: {"a":1}\n\n', b"data: \n\n", b"data:  two spaces\n\n", b"data:nospace\n\n",
    b'event: e\ndata: {"a":1}\n\n', b"event:  e\ndata: x\n\n", b"event: e:f\ndata: x: y\n\n",
    b"event: e\n\n", b"event: e\ndata: a\ndata: b\n\n", b"data: a\ndata: b\n\n",
    b"data: a\nid: 7\n\n", b"event: e\ndata: a\nid: 7\n\n", b"event: e\nid: 7\ndata: a\n\n",
    b": comment\ndata: a\n\n", b"data: [DONE]\n\n", "data: h\u00e9\u2713\n\n".encode(),
])
def test_the_common_shapes_parse_as_the_line_by_line_reading_does(raw: bytes) -> None:
    from gateway.upstream.sse import _parse_lines

    assert parse_frame(raw) == _parse_lines(raw)


@pytest.mark.parametrize("stream", [
    b'data: {"a":1}\n\n', b'event: e\ndata: {"a":1}\n\ndata: [DONE]\n\n', b"\n\n",
    b"data: a\n\n\n\ndata: b\n\n", b"data: a\n\n\ndata: b\n\n", b" \n\ndata: a\n\n",
    b": keep-alive\n\n", b"data: a\n\ndata: b", b"event: e\r\ndata: a\r\n\r\n\r\n",
    b"data: a\r\ndata: b\r\n\r\n", b"event: e\r\ndata: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n",
])
def test_whole_chunks_and_buffered_bytes_give_the_same_frames(stream: bytes) -> None:
    whole = SSEParser()
    frames = whole.feed(stream)
    byte_by_byte = SSEParser()
    pieces = [stream[i:i + 2] for i in range(0, len(stream), 2)]
    assert [f for piece in pieces for f in byte_by_byte.feed(piece)] == frames
    assert whole.close() == byte_by_byte.close()


def test_invalid_utf8_in_a_whole_chunk_of_frames_is_malformed():
    with pytest.raises(MalformedStream):
        SSEParser().feed(b"data: a\n\ndata: \xff\n\n")


@pytest.mark.parametrize("terminator", [b"\r\n", b"\r", b"\n"])
def test_a_line_end_split_across_reads_is_one_line_end(terminator: bytes) -> None:
    # A CR LF cut between two reads ends one line, not two: read as two, the blank line
    # would end the event early and split its data lines into two events.
    stream = terminator.join([b"event: e", b"data: a", b"data: b", b"", b"data: c", b"", b""])
    expected = [("e", "a\nb"), (None, "c")]
    assert frames_of([stream]) == expected
    for cut in range(1, len(stream)):
        assert frames_of([stream[:cut], stream[cut:]]) == expected, cut
    assert frames_of([bytes([b]) for b in stream]) == expected


def test_a_cr_at_the_end_of_a_read_does_not_swallow_a_later_blank_line() -> None:
    # Only an LF right after the CR belongs to it.
    assert frames_of([b"data: a\r", b"data: b\n\n"]) == [(None, "a\nb")]
    assert frames_of([b"data: a\r", b"\n", b"\n"]) == [(None, "a")]
    assert frames_of([b"data: a\r", b"\r"]) == [(None, "a")]


def test_one_leading_byte_order_mark_is_not_part_of_the_stream() -> None:
    stream = b'\xef\xbb\xbfdata: {"a":1}\n\ndata: [DONE]\n\n'
    expected = [(None, '{"a":1}'), (None, "[DONE]")]
    assert frames_of([stream]) == expected
    for cut in range(1, len(stream)):
        assert frames_of([stream[:cut], stream[cut:]]) == expected, cut
    assert frames_of([bytes([b]) for b in stream]) == expected
    (first, _) = SSEParser().feed(stream)
    assert first.raw == b'data: {"a":1}\n\n'  # nor of what is relayed


def test_a_byte_order_mark_later_in_the_stream_is_text() -> None:
    # Only the stream's first bytes may be one: a second one starts a field named "\ufeffdata".
    assert frames_of([b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\n"]) == [(None, None)]
    assert frames_of([b"data: a\n\n\xef\xbb\xbfdata: b\n\n"]) == [(None, "a"), (None, None)]


def test_a_stream_cut_inside_a_byte_order_mark_reports_its_bytes() -> None:
    parser = SSEParser()
    assert parser.feed(b"\xef\xbb") == []
    assert parser.close() == b"\xef\xbb"
    parser = SSEParser()
    assert parser.feed(b"\xef") == [] and parser.feed(b"x") == []
    assert parser.close() == b"\xefx"
