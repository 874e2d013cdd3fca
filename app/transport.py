"""The websocket transports: one small adapter over the two libraries a run mode may give us.

Under gevent-websocket's handler (`python -m app` and gunicorn's
GeventWebSocketWorker) the socket is already upgraded when Flask sees the
request, in `environ["wsgi.websocket"]`. Under `gunicorn -k gevent` nobody has
upgraded it and flask-sock's simple-websocket does the handshake. The session
code sees only `receive`, `send` and `close`.

gevent-websocket reads whatever length a frame header declares, so for it we
read frames ourselves and refuse an oversized message (close 1009) from its
header, before a byte of its payload is buffered.
"""

from __future__ import annotations

import logging
import socket
import struct

import gevent
from gevent.event import AsyncResult
from gevent.lock import Semaphore
from geventwebsocket.websocket import Header, WebSocket

from actors.message import Frame

log = logging.getLogger("nane.transport")

CLOSE_TIMEOUT = 1.0  # seconds a close frame may take before we drop the connection

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA


def write_all(sock: socket.socket, data: bytes) -> None:
    """Write `data`: one `send` when the kernel has room (nearly always), else wait for it."""
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(data[sent:])


class Binary(bytes):
    """A binary message: not part of the protocol, dropped like other bad input."""


PING_FRAME = Header.encode_header(True, OP_PING, b"", 0, 0)


class Silenceable:
    """`go_silent`, the fault control both transports share: read nothing more until closed."""

    _silent: AsyncResult | None = None

    def go_silent(self) -> None:
        """The peer's frames stay unread in the kernel; `receive` returns None once closed."""
        if self._silent is None:
            self._silent = AsyncResult()
            if self.closed:
                self._silent.set(None)


class GeventWebSocketTransport(Silenceable):
    """A socket gevent-websocket has upgraded; we read and write its frames ourselves."""

    def __init__(self, websocket: WebSocket, max_message_bytes: int):
        self._ws = websocket
        self._stream = websocket.stream
        self._read = websocket.stream.read
        self._write = websocket.stream.write
        self._socket = websocket.handler.socket
        self._max = max_message_bytes
        self._write_lock = Semaphore()
        self._heard = True
        self.closed = False
        self.error_code: int | None = None  # the close code when the client broke the protocol

    def receive(self) -> str | Binary | None:
        """The next message, or None once the connection is closed."""
        if self._silent is not None:
            return self._silent.wait()
        try:
            return self._read_message()
        except UnicodeDecodeError:
            self._fail(1007, "invalid UTF-8")
            return None
        except (OSError, ValueError, TypeError, AttributeError, struct.error):
            # a dead peer, a protocol error or a socket closed under us
            self._fail(1002, "protocol error")
            return None

    def _fail(self, code: int, reason: str) -> None:
        if not self.closed:
            self.error_code = code
        self.close(code, reason)

    def _read_message(self) -> str | Binary | None:
        opcode, parts, size = None, [], 0
        while not self.closed:
            header = Header.decode_header(self._stream)
            if header is None or header.flags:
                raise ValueError("bad frame header")
            self._heard = True
            if header.opcode in (OP_TEXT, OP_BINARY, OP_CONTINUATION):
                size += header.length
                if size > self._max:
                    self._fail(1009, f"message larger than {self._max} bytes")
                    return None
            payload = self._read(header.length) if header.length else b""
            if len(payload) != header.length:
                raise OSError("connection closed mid-frame")
            if header.mask:
                payload = header.unmask_payload(payload)
            if header.opcode == OP_PING:
                self._send_raw(Header.encode_header(True, OP_PONG, b"", len(payload), 0)
                               + bytes(payload))
                continue
            if header.opcode == OP_PONG:
                continue
            if header.opcode == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1000
                self.close(code if 1000 <= code < 5000 else 1002, "")
                return None
            if header.opcode == OP_CONTINUATION:
                if opcode is None:
                    raise ValueError("continuation without a start")
            elif header.opcode in (OP_TEXT, OP_BINARY):
                if opcode is not None:
                    raise ValueError("new message inside a fragmented one")
                opcode = header.opcode
            else:
                raise ValueError(f"unknown opcode {header.opcode}")
            parts.append(bytes(payload))
            if header.fin:
                data = b"".join(parts)
                return data.decode("utf-8") if opcode == OP_TEXT else Binary(data)
        return None

    def send(self, frames: list[Frame]) -> None:
        """Write text frames (each built once for all receivers) in one system call."""
        self._send_raw(b"".join([f.wire for f in frames]))

    def ping(self) -> None:
        self._heard = False
        self._send_raw(PING_FRAME)

    def answered(self) -> bool:
        return self._heard

    def _send_raw(self, data: bytes) -> None:
        with self._write_lock:
            if self.closed:
                raise OSError("connection closed")
            write_all(self._socket, data)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame if we can within CLOSE_TIMEOUT, then drop the socket."""
        if self.closed:
            return
        payload = struct.pack("!H", code) + reason.encode()[:123] if code != 1006 else b""
        try:
            with gevent.Timeout(CLOSE_TIMEOUT):
                with self._write_lock:
                    self.closed = True
                    if payload:
                        self._write(Header.encode_header(True, OP_CLOSE, b"", len(payload), 0)
                                    + payload)
        except (gevent.Timeout, OSError):
            pass
        finally:
            self.closed = True
            self._ws.closed = True
            if self._silent is not None:
                self._silent.set(None)
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class SimpleWebSocketTransport(Silenceable):
    """A socket flask-sock's simple-websocket upgraded (`gunicorn -k gevent`)."""

    def __init__(self, websocket):
        self._ws = websocket
        self._write_lock = Semaphore()
        self._heard = True
        self.closed = False
        self.error_code: int | None = None  # simple-websocket does not tell us why it closed

    def receive(self) -> str | Binary | None:
        from simple_websocket import ConnectionClosed

        if self._silent is not None:
            return self._silent.wait()
        try:
            data = self._ws.receive()
        except ConnectionClosed:
            data = None
        if data is None:
            self.closed = True
            return None
        self._heard = True
        return Binary(data) if isinstance(data, (bytes, bytearray)) else data

    def ping(self) -> None:
        from wsproto.events import Ping

        if self.closed or not self._ws.connected:
            raise OSError("connection closed")
        with self._write_lock:
            self._heard = False
            self._ws.pong_received = False  # simple-websocket sets it again on a pong
            self._ws.sock.sendall(self._ws.ws.send(Ping()))

    def answered(self) -> bool:
        return self._heard or self._ws.pong_received

    def send(self, frames: list[Frame]) -> None:
        # Our frames are plain RFC 6455 text frames (no compression bit), valid whatever
        # extension wsproto negotiated, so they go out as built, not re-encoded per receiver.
        if self.closed or not self._ws.connected:
            raise OSError("connection closed")
        with self._write_lock:
            write_all(self._ws.sock, b"".join([f.wire for f in frames]))

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        try:
            with gevent.Timeout(CLOSE_TIMEOUT):
                with self._write_lock:
                    if code != 1006:
                        self._ws.close(reason=code, message=reason)
        except Exception:  # already closed by the peer, or the write timed out
            pass
        finally:
            if self._silent is not None:
                self._silent.set(None)
            try:
                self._ws.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
