"""RFC 6455 frames as bytes, the server's side: nane's one websocket codec, with no I/O.

The transport (app/websocket/transport.py) reads headers with `header_size`
and `parse_header`, checks them with `Incoming`, unmasks with `unmask`, and
writes with `frame_header`, `server_frame` and `close_payload`. A room
encodes each message's JSON once (`Frame.json`, shared by every receiver);
the transport puts a frame header before it per write, so the chat itself
knows nothing of websocket framing. The tests' raw clients and the
benchmark's generator build on these functions (tests/wsframes.py).

Why our own and not wsproto: bench/codec.py measures both on chat-sized
frames (100-300 bytes). wsproto took 5 to 8 times as long to parse a masked
client frame (its `Connection` copies into its own buffer, builds a `Frame`
and an event per message) and 12 to 17 times as long to build a server frame
(an event object, a text encode, a bytearray). Each message a client sends is
parsed on the server's one core, so the cost would show in every figure; the
codec is about 230 lines and tested byte for byte against RFC 6455's examples.

No extension is ever negotiated (no run mode's handshake accepts one; see
app/websocket/handshake.py), so a set RSV bit is always a protocol error.
"""

from __future__ import annotations

import struct

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
DATA_OPCODES = frozenset((OP_CONTINUATION, OP_TEXT, OP_BINARY))
CONTROL_OPCODES = frozenset((OP_CLOSE, OP_PING, OP_PONG))
MAX_CONTROL_PAYLOAD = 125  # RFC 6455 5.5
MAX_CLOSE_REASON = MAX_CONTROL_PAYLOAD - 2  # bytes of UTF-8 after the 2-byte code

NO_STATUS = 1005  # what `parse_close` reports for a close frame without a code (RFC 6455 7.1.5)
# Never on the wire (RFC 6455 7.4.1): 1004 is reserved, 1005, 1006 and 1015 are for local use.
RESERVED_CLOSE_CODES = frozenset((1004, 1005, 1006, 1015))
# 1000-2999 belong to the protocol: only the codes RFC 6455 and IANA's registry assign
# (1000-1003, 1007-1014) may be sent; 3000-4999 are for libraries and applications.
ASSIGNED_CLOSE_CODES = frozenset(range(1000, 1015)) - RESERVED_CLOSE_CODES

_TWO = struct.Struct("!BB")
_SHORT = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")

Buffer = bytes | bytearray | memoryview


class ProtocolError(ValueError):
    """The peer broke RFC 6455: the connection closes with 1002."""


class LimitExceeded(ValueError):
    """A frame's header shows a message we will not take; `code` is the close code to send."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


# -- building ----------------------------------------------------------------------


def frame_header(opcode: int, length: int, fin: bool = True) -> bytes:
    """An unmasked frame's header alone, as a server sends it (`length` bytes of payload follow).

    The shortest of the three length forms (7-bit, 16-bit, 64-bit), as RFC 6455 5.2 requires.
    """
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        return _TWO.pack(first, length)
    if length < 65536:
        return _SHORT.pack(first, 126, length)
    return _LONG.pack(first, 127, length)


def server_frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """One unmasked frame, as a server sends it (every receiver may share these bytes)."""
    return frame_header(opcode, len(payload), fin) + payload


def unmask(payload: Buffer, mask: bytes) -> bytes:
    """XOR with the 4-byte mask (masking and unmasking are the same operation).

    One big-integer XOR over the whole payload: in CPython that is far faster
    than any loop over its bytes.
    """
    size = len(payload)
    if not size:
        return b""
    key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(size, "big")


def close_payload(code: int, reason: str = "") -> bytes:
    """A close frame's payload: the code, then the reason cut to 123 bytes of whole characters."""
    data = reason.encode()
    if len(data) > MAX_CLOSE_REASON:
        data = data[:MAX_CLOSE_REASON].decode(errors="ignore").encode()
    return _U16.pack(code) + data


# -- parsing -----------------------------------------------------------------------


def header_size(second: int) -> int:
    """The whole header's size in bytes, known from its second byte (length form and mask bit)."""
    length = second & 0x7F
    size = 2 if length < 126 else (4 if length == 126 else 10)
    return size + 4 if second & 0x80 else size


def parse_header(data: Buffer, at: int = 0) -> tuple[bool, int, int, bytes | None, int] | None:
    """The header at `data[at:]`: (fin, opcode, payload length, mask or None, header size).

    None when `data` does not hold the whole header yet ("need more"; after
    two bytes, `header_size` says how many). A plain tuple, not a named one:
    this runs once per frame on every hot path.

    Raises:
        ProtocolError: an RSV bit is set (no extension is ever negotiated).
    """
    available = len(data) - at
    if available < 2:
        return None
    first, second = data[at], data[at + 1]
    if first & 0x70:
        raise ProtocolError("reserved bits set")
    length, size = second & 0x7F, 2
    if length > 125:
        size = 4 if length == 126 else 10
        if available < size:
            return None
        length = (_U16 if size == 4 else _U64).unpack_from(data, at + 2)[0]
    if second < 0x80:
        return first > 0x7F, first & 0x0F, length, None, size
    if available < size + 4:
        return None
    return first > 0x7F, first & 0x0F, length, bytes(data[at + size:at + size + 4]), size + 4


def check_control(fin: bool, length: int) -> None:
    """Control frames are never fragmented and carry at most 125 bytes (RFC 6455 5.5)."""
    if not fin or length > MAX_CONTROL_PAYLOAD:
        raise ProtocolError("bad control frame")


def parse_close(payload: Buffer) -> tuple[int, str]:
    """(code, reason) of a received close frame; `NO_STATUS` when it has no code.

    Raises:
        ProtocolError: a 1-byte payload, or a code that must not be sent.
        UnicodeDecodeError: the reason is not UTF-8 (close 1007).
    """
    if not payload:
        return NO_STATUS, ""
    if len(payload) == 1:
        raise ProtocolError("close frame with a 1-byte payload")
    code = _U16.unpack_from(payload)[0]
    if not close_code_allowed(code):
        raise ProtocolError(f"close code {code} is not allowed on the wire")
    return code, bytes(payload[2:]).decode("utf-8")


def close_code_allowed(code: int) -> bool:
    """Whether a peer may send `code` (RFC 6455 7.4): an assigned protocol code, or 3000-4999."""
    return code in ASSIGNED_CLOSE_CODES or 3000 <= code <= 4999


class Incoming:
    """The rules for a client's frames, applied to each header before its payload is read.

    Tracks the message being assembled: a continuation needs a start, a new
    message may not begin inside one, and the message's size and number of
    pieces are checked against the limits from the headers alone, so nothing
    beyond the limit is ever read into memory.
    """

    __slots__ = ("max_bytes", "max_fragments", "opcode", "size", "fragments")

    def __init__(self, max_bytes: int, max_fragments: int = 1024) -> None:
        self.max_bytes = max_bytes
        self.max_fragments = max_fragments
        self.opcode: int | None = None  # the data opcode of the message being assembled
        self.size = 0
        self.fragments = 0

    def check(self, fin: bool, opcode: int, length: int, mask: bytes | None) -> bool:
        """Check one client frame's header; True for a control frame (which a message may enclose).

        After a data frame with `fin` set the message is complete: `finish`
        then makes way for the next one.

        Raises:
            ProtocolError: an unmasked frame, an unknown opcode, a bad control
                frame, or fragments out of order.
            LimitExceeded: the message would be larger than `max_bytes` (1009)
                or come in more than `max_fragments` frames (1008).
        """
        if mask is None:
            raise ProtocolError("client frames must be masked")
        if opcode >= 8:
            if opcode not in CONTROL_OPCODES:
                raise ProtocolError(f"unknown opcode {opcode}")
            check_control(fin, length)
            return True
        if opcode == OP_CONTINUATION:
            if self.opcode is None:
                raise ProtocolError("continuation without a start")
        elif opcode in DATA_OPCODES:
            if self.opcode is not None:
                raise ProtocolError("new message inside a fragmented one")
            self.opcode = opcode
        else:
            raise ProtocolError(f"unknown opcode {opcode}")
        self.size += length
        if self.size > self.max_bytes:
            raise LimitExceeded(1009, f"message larger than {self.max_bytes} bytes")
        if self.fragments >= self.max_fragments:
            raise LimitExceeded(1008, f"message in more than {self.max_fragments} frames")
        self.fragments += 1
        return False

    def finish(self) -> int:
        """The completed message's opcode (text or binary); ready for the next message."""
        opcode = self.opcode
        assert opcode is not None
        self.opcode, self.size, self.fragments = None, 0, 0
        return opcode
