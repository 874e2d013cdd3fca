"""The websocket transport: RFC 6455 frames read and written by us, on every run mode's socket.

Whoever answered the handshake — gevent-websocket's handler (`python -m app`
and gunicorn's GeventWebSocketWorker, app/websocket/gevent_websocket_shim.py)
or our own 101 (`gunicorn -k gevent`, app/websocket/handshake.py) — hands the
/ws view the socket and its read buffer, and from then on this class alone
reads and writes it. The reader greenlet uses `receive`, `refuse` and
`admit_control`; the `SessionActor` uses `send`, `ping`, `answered`,
`go_silent` and `close`. The frames themselves are parsed, checked and built
by nane's one codec, app/websocket/codec.py (no I/O); this class does the
reads, the writes, the locking and the timeouts around it.

What it promises, whatever the client sends (README, "Limits"):

- one writer per socket: every write takes `_write_lock`, and nothing else
  (no library thread) ever writes;
- a write that makes no progress for `write_timeout` seconds cuts the
  connection, so a client that stops reading cannot hold a writer forever;
- a message's JSON (`Frame.json`) is encoded once and shared by every
  receiver; each write puts a text frame header before each payload and
  hands both to the kernel with vectored writes (`sendmsg`), so a stalled
  client holds references, never copies;
- the reader yields to others every `YIELD_EVERY` frames however fast its
  input is; ping and pong frames count against the connection's rate limit;
- a message is refused (close 1009) from its header when too large, and (1008)
  when it comes in more than `max_fragments` pieces: nothing is buffered but
  the one message being read;
- after a close for a broken rule (1002, 1007, 1008, 1009) the rest of what
  the peer sends is read and discarded, at most `DRAIN_BYTES` bytes for
  `DRAIN_SECONDS` (or until it pauses for `DRAIN_PAUSE`), so that it receives
  the close frame instead of a TCP reset.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from io import BufferedIOBase

import gevent
from gevent.event import AsyncResult
from gevent.lock import Semaphore

from actors import logfmt
from actors.chat.message import Frame
from app.websocket.codec import (
    NO_STATUS,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Incoming,
    LimitExceeded,
    ProtocolError,
    close_payload,
    frame_header,
    header_size,
    parse_close,
    parse_header,
    server_frame,
    unmask,
)

log = logging.getLogger("nane.transport")

CLOSE_TIMEOUT = 1.0  # seconds a close frame may take before we drop the connection
YIELD_EVERY = 16  # frames read in a row before the reader gives other greenlets a turn
DRAIN_BYTES = 64 * 1024 * 1024  # discarded after a refusal, at most, waiting for the peer's close
DRAIN_SECONDS = 10.0
DRAIN_PAUSE = 1.0  # a peer that sends nothing for this long while we drain is done writing
IOV_MAX = 512  # buffers per sendmsg call (the kernel takes up to 1024)
READ_CHUNK = 64 * 1024


class Binary(bytes):
    """A binary message: not part of the protocol, dropped like other bad input."""


PING_FRAME = server_frame(OP_PING)
CACHED_HEADERS_BELOW = 4096  # payload lengths whose text header is kept: every chat-sized message
_TEXT_HEADERS: dict[int, bytes] = {}  # payload length -> its text frame's header


def text_header(length: int) -> bytes:
    """The header of a text frame of `length` bytes, built once per length and then shared.

    A broadcast writes one header per receiver: a dictionary look-up is
    cheaper than packing it each time. Only lengths below
    `CACHED_HEADERS_BELOW` are kept, so the table stays under a few hundred
    KiB however many lengths clients make the server send.
    """
    header = _TEXT_HEADERS.get(length)
    if header is None:
        header = frame_header(OP_TEXT, length)
        if length < CACHED_HEADERS_BELOW:
            _TEXT_HEADERS[length] = header
    return header


class WriteStalled(OSError):
    """A write made no progress within the write timeout."""


class WebSocketTransport:
    """One upgraded socket; we read and write its frames ourselves.

    Args:
        sock: the connection's (gevent) socket.
        rfile: the buffered reader over `sock` that already holds what the
            handshake read past the request head.
        max_message_bytes: a bigger message closes the connection with 1009.
        max_fragments: frames one message may come in.
        write_timeout: seconds a write may make no progress.
        admit_control: asked for every ping and pong frame; False drops it
            (over the rate limit). The reader's owner decides what a flood is.
    """

    def __init__(self, sock: socket.socket, rfile: BufferedIOBase, max_message_bytes: int,
                 max_fragments: int = 1024, write_timeout: float = 20.0,
                 admit_control: Callable[[], bool] = lambda: True) -> None:
        self._socket = sock
        self._rfile = rfile
        self._incoming = Incoming(max_message_bytes, max_fragments)
        self._write_timeout = write_timeout
        self.admit_control = admit_control
        self._write_lock = Semaphore()
        self._heard = True
        self._frames_since_yield = 0
        self.closed = False
        self.error_code: int | None = None  # the close code when the client broke a rule
        self._silent: AsyncResult | None = None  # set by `go_silent`, a fault control

    def go_silent(self) -> None:
        """A fault control: read nothing more (the peer's frames stay in the kernel) until closed."""
        if self._silent is None:
            self._silent = AsyncResult()
            if self.closed:
                self._silent.set(None)

    # -- reading ------------------------------------------------------------------

    def receive(self) -> str | Binary | None:
        """The next message, or None once the connection is closed."""
        if self._silent is not None:
            return self._silent.wait()
        try:
            return self._read_message()
        except UnicodeDecodeError:
            self.refuse(1007, "invalid UTF-8")
        except ProtocolError as error:
            self.refuse(1002, str(error), drain=None)
        except (OSError, ValueError):  # a dead peer or a socket closed under us
            self.close(1006)
        return None

    def refuse(self, code: int, reason: str, drain: int | None = 0) -> None:
        """Close for a broken rule; the peer still hears why (see `_drain`).

        `drain` is how much of the current frame's payload is still unread, or
        None when the stream cannot be parsed any further.
        """
        if self.closed:
            return
        self.error_code = code
        log.info("event=ws_refused_frame code=%d reason=%s", code, logfmt.value(reason))
        if self._send_close(code, reason):
            self._drain(drain)
        self.close(code, reason)

    def _read_exact(self, size: int) -> bytes:
        data = self._rfile.read(size)
        if len(data) != size:
            raise OSError("connection closed mid-frame")
        return data

    def _read_header(self) -> tuple[bool, int, int, bytes | None, int]:
        """The next frame's header (see `parse_header`), in two exact reads."""
        head = self._read_exact(2)
        size = header_size(head[1])
        if size > 2:
            head += self._read_exact(size - 2)
        header = parse_header(head)
        assert header is not None  # `head` is exactly `header_size` long
        return header

    def _read_message(self) -> str | Binary | None:
        incoming, parts = self._incoming, []
        while not self.closed:
            self._take_turns()
            fin, op, length, mask, _ = self._read_header()
            try:
                control = incoming.check(fin, op, length, mask)
            except LimitExceeded as refusal:
                self.refuse(refusal.code, str(refusal), drain=length)
                return None
            assert mask is not None  # `check` refuses unmasked frames
            if control:
                self._control(op, self._payload(length, mask))
                continue
            self._heard = True
            if length:
                parts.append(self._payload(length, mask))
            if fin:
                data = b"".join(parts)
                return data.decode("utf-8") if incoming.finish() == OP_TEXT else Binary(data)
        return None

    def _take_turns(self) -> None:
        """Called per frame: however fast the input is, others get their turn."""
        self._frames_since_yield += 1
        if self._frames_since_yield >= YIELD_EVERY:
            self._frames_since_yield = 0
            gevent.sleep(0)

    def _payload(self, length: int, mask: bytes) -> bytes:
        return unmask(self._read_exact(length), mask) if length else b""

    def _control(self, op: int, payload: bytes) -> None:
        if op == OP_CLOSE:
            self._heard = True
            code, _ = parse_close(payload)
            self.close(1000 if code == NO_STATUS else code, "")
            return
        if not self.admit_control():
            return  # over the rate limit: not even answered
        self._heard = True
        if op == OP_PING:
            self._send_raw([server_frame(OP_PONG, payload)])

    def _drain(self, unread: int | None) -> None:
        """Read and discard until the peer's close frame, EOF or a pause, bounded in bytes and time.

        A peer still writing when we close would get a TCP reset, and a reset
        throws away our close frame before the peer reads it. `unread` is what
        is left of the current frame (then frames are skipped whole until a
        close frame), or None when the stream cannot be parsed (then bytes are
        skipped until EOF). A peer that pauses for `DRAIN_PAUSE` is done writing.
        """
        budget = DRAIN_BYTES
        scratch = memoryview(bytearray(READ_CHUNK))
        try:
            with gevent.Timeout(DRAIN_SECONDS):
                while budget > 0:
                    skip = unread if unread is not None else budget
                    while skip > 0 and budget > 0:
                        self._take_turns()
                        with gevent.Timeout(DRAIN_PAUSE):
                            got = self._rfile.readinto(scratch[:min(skip, budget, READ_CHUNK)])
                        if not got:
                            return  # EOF
                        skip -= got
                        budget -= got
                    if unread is None:
                        return
                    self._take_turns()
                    with gevent.Timeout(DRAIN_PAUSE):
                        _, op, unread, _, _ = self._read_header()
                    budget -= 2
                    if op == OP_CLOSE:
                        return
        except (gevent.Timeout, OSError, ValueError):  # ValueError: ProtocolError included
            pass

    # -- writing ------------------------------------------------------------------

    def send(self, frames: list[Frame]) -> None:
        """Write text frames: a header, then the JSON every receiver shares, with no copy of it."""
        buffers: list[bytes | memoryview] = []
        append, cached = buffers.append, _TEXT_HEADERS.get
        for frame in frames:
            payload = frame.json
            append(cached(len(payload)) or text_header(len(payload)))
            append(payload)
        self._send_raw(buffers)

    def ping(self) -> None:
        self._heard = False
        self._send_raw([PING_FRAME])

    def answered(self) -> bool:
        return self._heard

    def _send_raw(self, buffers: list[bytes | memoryview]) -> None:
        with self._write_lock:
            if self.closed:
                raise OSError("connection closed")
            self._write(buffers)

    def _write(self, buffers: list[bytes | memoryview]) -> None:
        """Vectored writes from the callers' buffers; a stalled write raises WriteStalled.

        The buffers go to `sendmsg` as they are; only a buffer the kernel took
        part of is replaced by a view of its rest (the bytes stay where they are).
        """
        first = 0  # `buffers` is a list each caller builds for this write: ours to change
        while first < len(buffers):
            batch = buffers[first:first + IOV_MAX]
            try:
                with gevent.Timeout(self._write_timeout, WriteStalled):
                    sent = self._socket.sendmsg(batch)
            except WriteStalled:
                log.info("event=write_stalled seconds=%s", self._write_timeout)
                raise WriteStalled(f"no progress writing for {self._write_timeout}s") from None
            while sent:
                size = len(buffers[first])
                if sent >= size:
                    sent -= size
                    first += 1
                else:
                    buffers[first] = memoryview(buffers[first])[sent:]
                    sent = 0

    # -- closing ------------------------------------------------------------------

    def _send_close(self, code: int, reason: str) -> bool:
        """Write a close frame within CLOSE_TIMEOUT; True when it went out."""
        payload = close_payload(code, reason)
        try:
            with gevent.Timeout(CLOSE_TIMEOUT):
                with self._write_lock:
                    if self.closed:
                        return False
                    self.closed = True
                    self._write([server_frame(OP_CLOSE, payload)])
                    return True
        except (gevent.Timeout, OSError):
            self.closed = True
            return False

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame if we can within CLOSE_TIMEOUT, then drop the socket.

        Code 1006 means "no close frame": the connection is just dropped.
        """
        if not self.closed and code != 1006:
            self._send_close(code, reason)
        self.closed = True
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self._silent is not None:
            self._silent.set(None)
