"""RFC 6455 as a client speaks it: the tests' raw clients and the benchmark's generator.

Masked frames (`client_frame`, `frame_header` with a mask), an incremental
parser of the server's frames (`FrameParser`) and the opening handshake
(`handshake_request`, `handshake_answer`). Headers are parsed and built with
the server's own codec (app/websocket/codec.py), so both sides of every test
share one reading of RFC 6455; only what a client alone does lives here.
"""

from __future__ import annotations

import base64
import os

from app.websocket import codec
from app.websocket.codec import Buffer, parse_header, unmask


def frame_header(opcode: int, length: int, fin: bool = True, mask: bytes | None = None) -> bytes:
    """A frame's header alone, mask included when given (a payload of `length` bytes follows it).

    The server's header with the mask bit set, then the mask: tests that
    declare one length and send another write the payload themselves.
    """
    header = codec.frame_header(opcode, length, fin)
    if mask is None:
        return header
    return bytes((header[0], header[1] | 0x80)) + header[2:] + mask


def client_frame(opcode: int, payload: bytes = b"", fin: bool = True,
                 mask: bytes | None = None) -> bytes:
    """One masked frame, as a client sends it; a random mask unless `mask` (4 bytes) is given."""
    if mask is None:
        mask = os.urandom(4)
    return frame_header(opcode, len(payload), fin, mask) + unmask(payload, mask)


class FrameParser:
    """Feed bytes as they arrive, get whole frames: the incremental parser of raw clients.

    `feed(data)` returns the frames completed by `data` as (fin, opcode,
    payload) tuples, payloads unmasked. With `keep_data=False` a data frame is
    reported as soon as its header has arrived, with payload None, and its
    payload is skipped without being buffered or copied: a counting client
    reads megabytes a second for the cost of walking headers. Control frames
    always come whole.

    `data` may be a view of the caller's reusable buffer: only an incomplete
    tail is copied.
    """

    __slots__ = ("keep_data", "_pending", "_skip")

    def __init__(self, keep_data: bool = True) -> None:
        self.keep_data = keep_data
        self._pending = bytearray()  # the start of a frame not complete yet
        self._skip = 0  # payload bytes still to pass over (keep_data=False)

    def feed(self, data: Buffer) -> list[tuple[bool, int, bytes | None]]:
        frames: list[tuple[bool, int, bytes | None]] = []
        skip = self._skip
        if skip:
            if skip >= len(data):
                self._skip = skip - len(data)
                return frames
            data, self._skip = data[skip:], 0
        pending = self._pending
        if pending:  # appended to, so a frame that comes in many reads costs no more than one
            pending += data
            data = pending
        at, end = 0, len(data)
        keep_data = self.keep_data
        while True:
            header = parse_header(data, at)
            if header is None:
                break
            fin, opcode, length, mask, size = header
            start = at + size
            stop = start + length
            if not keep_data and opcode < 8:
                frames.append((fin, opcode, None))
                if stop > end:
                    self._skip, at = stop - end, end
                    break
                at = stop
                continue
            if stop > end:
                break
            payload = bytes(data[start:stop])
            frames.append((fin, opcode, unmask(payload, mask) if mask else payload))
            at = stop
        if pending:
            del pending[:at]
        elif at < end:
            pending += data[at:end]
        return frames


# -- the client's opening handshake (RFC 6455 4.1), for the tests and the benchmark --

END_OF_HEAD = b"\r\n\r\n"


def handshake_request(path: str, host: str = "127.0.0.1", **headers: str | None) -> bytes:
    """A client's upgrade request for `path`, with a fresh random key.

    A keyword overrides a header (`Sec_WebSocket_Version="8"`: underscores
    become dashes), and None leaves it out: the tests send malformed
    handshakes this way.
    """
    fields: dict[str, str | None] = {
        "Host": host, "Upgrade": "websocket", "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13"}
    for name, value in headers.items():
        fields[name.replace("_", "-")] = value
    lines = "".join(f"{name}: {value}\r\n" for name, value in fields.items() if value is not None)
    return f"GET {path} HTTP/1.1\r\n{lines}\r\n".encode()


def handshake_answer(data: bytes) -> tuple[bytes, bytes] | None:
    """(the server's answer head, the bytes after it), or None while the head is incomplete.

    Raises:
        ConnectionRefusedError: the answer is not `101 Switching Protocols`.
    """
    if END_OF_HEAD not in data:
        return None
    head, _, rest = data.partition(END_OF_HEAD)
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionRefusedError(f"handshake refused: {head.decode('latin-1')!r}")
    return head, rest
