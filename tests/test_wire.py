"""The websocket codec on its own, bytes in, bytes out, no network: the server's side
(app/websocket/codec.py) and the test clients' side (tests/wsframes.py).

Known vectors come from RFC 6455 section 5.7; the rest are round trips
through every length form, opcode and mask, the incremental parser fed a
frame split at every byte, and the close and control-frame rules.
"""

from __future__ import annotations

import base64
import os

import pytest

from actors.chat.message import Frame
from app.websocket.codec import (
    NO_STATUS,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Incoming,
    LimitExceeded,
    ProtocolError,
    check_control,
    close_code_allowed,
    close_payload,
    frame_header,
    header_size,
    parse_close,
    parse_header,
    server_frame,
    unmask,
)
from app.websocket.transport import text_header
from tests.wsframes import FrameParser, client_frame, handshake_answer, handshake_request
from tests.wsframes import frame_header as client_header

OPCODES = [OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG]
# one size per length form and both edges of each: 7-bit, 16-bit, 64-bit
SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70000]
RFC_MASK = bytes((0x37, 0xFA, 0x21, 0x3D))


def parse_whole(frame: bytes) -> tuple[bool, int, int, bytes | None, bytes]:
    """(fin, opcode, length, mask, payload as sent) of one complete frame."""
    header = parse_header(frame)
    assert header is not None
    fin, opcode, length, mask, size = header
    assert size == header_size(frame[1]) and len(frame) == size + length
    payload = frame[size:]
    return fin, opcode, length, mask, unmask(payload, mask) if mask else payload


# -- RFC 6455 5.7 --------------------------------------------------------------------


def test_rfc_6455_examples_build_byte_for_byte():
    assert server_frame(OP_TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
    assert client_frame(OP_TEXT, b"Hello", mask=RFC_MASK) == bytes.fromhex(
        "818537fa213d7f9f4d5158")
    # a fragmented unmasked text message: "Hel", then "lo"
    assert server_frame(OP_TEXT, b"Hel", fin=False) == bytes.fromhex("010348656c")
    assert server_frame(OP_CONTINUATION, b"lo") == bytes.fromhex("80026c6f")
    # an unmasked ping, and the masked pong that answers it
    assert server_frame(OP_PING, b"Hello") == bytes.fromhex("890548656c6c6f")
    assert client_frame(OP_PONG, b"Hello", mask=RFC_MASK) == bytes.fromhex(
        "8a8537fa213d7f9f4d5158")
    # 256 bytes and 64 KiB of binary data in one unmasked frame
    assert frame_header(OP_BINARY, 256) == bytes.fromhex("827e0100")
    assert frame_header(OP_BINARY, 65536) == bytes.fromhex("827f0000000000010000")


def test_rfc_6455_examples_parse():
    assert parse_whole(bytes.fromhex("818537fa213d7f9f4d5158")) == (
        True, OP_TEXT, 5, RFC_MASK, b"Hello")
    assert parse_whole(bytes.fromhex("810548656c6c6f")) == (True, OP_TEXT, 5, None, b"Hello")
    assert parse_header(bytes.fromhex("827f0000000000010000")) == (True, OP_BINARY, 65536, None, 10)
    parser = FrameParser()
    assert parser.feed(bytes.fromhex("010348656c")) == [(False, OP_TEXT, b"Hel")]
    assert parser.feed(bytes.fromhex("80026c6f")) == [(True, OP_CONTINUATION, b"lo")]


# -- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("opcode", OPCODES)
def test_every_length_form_and_opcode_round_trips(opcode, size):
    payload = os.urandom(size)
    for fin in (True, False):
        assert parse_whole(server_frame(opcode, payload, fin)) == (fin, opcode, size, None,
                                                                   payload)
        mask = os.urandom(4)
        assert parse_whole(client_frame(opcode, payload, fin, mask)) == (fin, opcode, size, mask,
                                                                         payload)


@pytest.mark.parametrize("size, header", [(125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_the_shortest_length_form_is_used(size, header):
    assert len(server_frame(OP_TEXT, bytes(size))) == header + size
    assert len(client_frame(OP_TEXT, bytes(size))) == header + 4 + size


def test_a_client_frame_gets_a_fresh_random_mask():
    frames = {client_frame(OP_TEXT, b"same payload") for _ in range(20)}
    assert len(frames) == 20
    assert {parse_whole(f)[4] for f in frames} == {b"same payload"}


def test_masking_is_its_own_inverse_and_a_zero_mask_changes_nothing():
    payload = os.urandom(1001)
    mask = os.urandom(4)
    assert unmask(unmask(payload, mask), mask) == payload
    assert unmask(payload, bytes(4)) == payload
    assert unmask(b"", mask) == b""
    assert unmask(memoryview(bytearray(payload)), mask) == unmask(payload, mask)


def test_a_message_goes_out_as_the_codec_s_text_frame_its_header_built_once_per_length():
    for size in SIZES:
        frame = Frame(b"x" * size)
        assert text_header(len(frame.json)) + frame.json == server_frame(OP_TEXT, frame.json)
        assert text_header(size) == frame_header(OP_TEXT, size)
    assert text_header(200) is text_header(200)  # a chat-sized message's header is shared


def test_a_client_frame_header_is_the_server_s_with_the_mask_bit_and_the_mask():
    for size in SIZES:
        header = server_frame(OP_TEXT, bytes(size))[:-size or None]
        masked = client_header(OP_TEXT, size, mask=RFC_MASK)
        assert masked == bytes((header[0], header[1] | 0x80)) + header[2:] + RFC_MASK
        assert client_header(OP_TEXT, size) == header


# -- headers from bytes already read ----------------------------------------------------


@pytest.mark.parametrize("size", [5, 300, 70000])
@pytest.mark.parametrize("masked", [False, True])
def test_a_header_is_incomplete_until_its_last_byte(size, masked):
    frame = client_frame(OP_TEXT, bytes(size)) if masked else server_frame(OP_TEXT, bytes(size))
    whole = header_size(frame[1])
    for cut in range(whole):
        assert parse_header(frame[:cut]) is None, cut
    assert parse_header(frame[:whole])[4] == whole
    assert parse_header(b"junk" + frame, 4) == parse_header(frame)


def test_reserved_bits_are_a_protocol_error():
    for bit in (0x40, 0x20, 0x10):
        with pytest.raises(ProtocolError, match="reserved bits"):
            parse_header(bytes((0x81 | bit, 0)))


# -- the incremental parser -----------------------------------------------------------------


FRAMES = [(True, OP_TEXT, b"hello"), (False, OP_TEXT, b"x" * 126),
          (True, OP_CONTINUATION, b"y" * 300), (True, OP_PING, b"are you there"),
          (True, OP_BINARY, os.urandom(70000)), (True, OP_CLOSE, close_payload(1000, "bye")),
          (True, OP_PONG, b"")]


def a_stream() -> tuple[bytes, list[int]]:
    """`FRAMES` back to back, masked and unmasked in turn, and where each frame starts."""
    pieces = [client_frame(op, p, fin) if i % 2 else server_frame(op, p, fin)
              for i, (fin, op, p) in enumerate(FRAMES)]
    starts = [sum(len(piece) for piece in pieces[:i]) for i in range(len(pieces))]
    return b"".join(pieces), starts


def test_the_parser_gives_the_same_frames_however_the_bytes_are_split():
    data, starts = a_stream()
    assert FrameParser().feed(data) == FRAMES
    # every byte of every header (14 at most), and the last byte of the frame before
    for split in sorted({start + d for start in starts for d in range(-1, 15)}):
        if 0 < split < len(data):
            parser = FrameParser()
            assert parser.feed(data[:split]) + parser.feed(data[split:]) == FRAMES, split


def test_the_parser_takes_one_byte_at_a_time_and_views_of_a_reused_buffer():
    data, starts = a_stream()
    parser, got = FrameParser(), []
    for i in range(starts[4]):  # the frames before the 70,000-byte one, a byte at a time
        got += parser.feed(data[i:i + 1])
    assert got == FRAMES[:4]
    scratch = bytearray(64)  # a caller's buffer, overwritten between reads
    parser, got = FrameParser(), []
    for at in range(0, len(data), 64):
        chunk = data[at:at + 64]
        scratch[:len(chunk)] = chunk
        got += parser.feed(memoryview(scratch)[:len(chunk)])
    assert got == FRAMES


def test_a_counting_parser_reports_data_frames_from_their_header_and_skips_their_payload():
    data, _ = a_stream()
    expected = [(fin, op, None if op < 8 else p) for fin, op, p in FRAMES]
    assert FrameParser(keep_data=False).feed(data) == expected
    for split in range(1, len(data), 997):
        parser = FrameParser(keep_data=False)
        assert parser.feed(data[:split]) + parser.feed(data[split:]) == expected, split
    parser = FrameParser(keep_data=False)
    header = frame_header(OP_TEXT, 1000)
    assert parser.feed(header) == [(True, OP_TEXT, None)]  # reported before its payload
    assert parser.feed(bytes(999)) == []
    assert parser.feed(bytes(1) + server_frame(OP_TEXT, b"next")) == [(True, OP_TEXT, None)]


# -- close frames -------------------------------------------------------------------------


def test_close_payloads_round_trip_and_an_empty_one_has_no_status():
    assert close_payload(1000) == b"\x03\xe8"
    assert parse_close(close_payload(1009, "message larger than 4096 bytes")) == (
        1009, "message larger than 4096 bytes")
    assert parse_close(close_payload(4000, "é")) == (4000, "é")
    assert parse_close(b"") == (NO_STATUS, "")


def test_a_close_reason_is_cut_to_125_bytes_of_whole_characters():
    payload = close_payload(1008, "é" * 100)  # 200 bytes of UTF-8
    assert len(payload) == 124  # 61 whole characters: 122 bytes, not half of the 62nd
    assert parse_close(payload) == (1008, "é" * 61)
    assert len(close_payload(1000, "x" * 500)) == 125


def test_a_one_byte_close_payload_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="1-byte"):
        parse_close(b"\x03")


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
                                  65535])
def test_close_codes_that_must_not_be_sent_are_a_protocol_error(code):
    assert not close_code_allowed(code)
    with pytest.raises(ProtocolError, match=f"close code {code}"):
        parse_close(code.to_bytes(2, "big"))


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                  1013, 1014, 3000, 3999, 4000, 4999])
def test_close_codes_a_peer_may_send(code):
    assert close_code_allowed(code)
    assert parse_close(code.to_bytes(2, "big")) == (code, "")


def test_a_close_reason_that_is_not_utf8_is_refused():
    with pytest.raises(UnicodeDecodeError):
        parse_close(b"\x03\xe8\xff")


# -- control frames and the rules of a client's stream ------------------------------------


def test_control_frames_are_whole_and_at_most_125_bytes():
    check_control(True, 125)
    with pytest.raises(ProtocolError):
        check_control(True, 126)
    with pytest.raises(ProtocolError):
        check_control(False, 0)


def header_of(frame: bytes) -> tuple[bool, int, int, bytes | None]:
    return parse_header(frame)[:4]


def test_incoming_frames_follow_the_rules():
    incoming = Incoming(max_bytes=100, max_fragments=3)
    assert incoming.check(*header_of(client_frame(OP_TEXT, b"a", fin=False))) is False
    assert incoming.check(*header_of(client_frame(OP_PING, b"p"))) is True  # between pieces
    assert incoming.check(*header_of(client_frame(OP_CONTINUATION, b"b"))) is False
    assert incoming.finish() == OP_TEXT
    assert incoming.check(*header_of(client_frame(OP_BINARY, b"c"))) is False
    assert incoming.finish() == OP_BINARY
    broken = {
        "client frames must be masked": [server_frame(OP_TEXT, b"a")],
        "continuation without a start": [client_frame(OP_CONTINUATION, b"a")],
        "new message inside": [client_frame(OP_TEXT, b"a", fin=False), client_frame(OP_TEXT, b"b")],
        "unknown opcode 3": [client_frame(0x3, b"")],
        "unknown opcode 11": [client_frame(0xB, b"")],
        "bad control frame": [client_frame(OP_PING, b"p", fin=False)],
    }
    for reason, frames in broken.items():
        incoming = Incoming(max_bytes=100)
        for frame in frames[:-1]:
            incoming.check(*header_of(frame))
        with pytest.raises(ProtocolError, match=reason):
            incoming.check(*header_of(frames[-1]))
    with pytest.raises(ProtocolError, match="bad control frame"):
        Incoming(100).check(True, OP_PING, 126, RFC_MASK)


def test_incoming_limits_are_checked_from_headers_alone():
    incoming = Incoming(max_bytes=100, max_fragments=3)
    with pytest.raises(LimitExceeded) as refused:
        incoming.check(True, OP_TEXT, 1 << 30, RFC_MASK)  # 1 GiB declared, nothing read
    assert (refused.value.code, str(refused.value)) == (1009, "message larger than 100 bytes")
    incoming = Incoming(max_bytes=100, max_fragments=3)
    incoming.check(False, OP_TEXT, 60, RFC_MASK)
    with pytest.raises(LimitExceeded, match="larger than 100"):
        incoming.check(True, OP_CONTINUATION, 41, RFC_MASK)  # the sum counts
    incoming = Incoming(max_bytes=100, max_fragments=3)
    for op in (OP_TEXT, OP_CONTINUATION, OP_CONTINUATION):
        incoming.check(False, op, 0, RFC_MASK)  # empty pieces count too
    with pytest.raises(LimitExceeded) as refused:
        incoming.check(True, OP_CONTINUATION, 0, RFC_MASK)
    assert (refused.value.code, str(refused.value)) == (1008, "message in more than 3 frames")


# -- the client's opening handshake -------------------------------------------------------


def test_a_handshake_request_has_every_header_rfc_6455_asks_for_and_a_fresh_key():
    first, second = handshake_request("/ws?username=a", "h:1"), handshake_request("/ws")
    lines = first.decode().split("\r\n")
    assert lines[0] == "GET /ws?username=a HTTP/1.1" and first.endswith(b"\r\n\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:] if line)
    assert fields["Host"] == "h:1" and fields["Upgrade"] == "websocket"
    assert fields["Connection"] == "Upgrade" and fields["Sec-WebSocket-Version"] == "13"
    assert len(base64.b64decode(fields["Sec-WebSocket-Key"])) == 16
    assert fields["Sec-WebSocket-Key"] not in second.decode()


def test_a_handshake_header_can_be_changed_or_left_out():
    request = handshake_request("/ws", Sec_WebSocket_Version="8", Upgrade=None).decode()
    assert "Sec-WebSocket-Version: 8\r\n" in request and "Upgrade:" not in request


def test_a_handshake_answer_is_read_once_its_head_is_complete():
    answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi"
    for cut in range(len(answer) - 4):
        assert handshake_answer(answer[:cut]) is None
    assert handshake_answer(answer) == (answer[:answer.index(b"\r\n\r\n")], b"\x81\x02hi")
    with pytest.raises(ConnectionRefusedError, match="401"):
        handshake_answer(b"HTTP/1.1 401 Unauthorized\r\n\r\nname required")
