"""Hundreds of websocket clients in one thread: raw sockets, one selector, bounded waits.

websocket-client costs tens of microseconds per frame, too much for a test that
receives a couple of million frames; these clients do the handshake by hand,
speak RFC 6455 through nane's own codec (tests/wsframes.py: masked text
frames out, the server's frames parsed, pong for ping) and hand each received
message's payload to a callback.
"""

from __future__ import annotations

import json
import selectors
import socket
import time
from collections.abc import Callable

from app.websocket.codec import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, parse_close
from tests.ports import upgrade
from tests.wsframes import FrameParser, client_frame

RECV_SIZE = 256 * 1024
HANDSHAKE_TIMEOUT = 5.0


class Client:
    """One connection: its socket, its unread bytes, and whether the server closed it."""

    __slots__ = ("index", "sock", "parser", "leftover", "closed", "close_code")

    def __init__(self, index: int, sock: socket.socket, leftover: bytes):
        self.index = index
        self.sock = sock
        self.parser = FrameParser()
        self.leftover = leftover  # frames that came with the handshake's answer
        self.closed = False
        self.close_code: int | None = None

    def send_json(self, frame: dict) -> None:
        self.sock.sendall(client_frame(OP_TEXT, json.dumps(frame).encode()))


def connect(port: int, username: str, index: int, query: str = "") -> Client:
    """Open a websocket to 127.0.0.1:`port` and finish the handshake (bounded)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=HANDSHAKE_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    path = f"/ws?username={username}" + (f"&{query}" if query else "")
    leftover = upgrade(sock, path, f"127.0.0.1:{port}")
    sock.setblocking(False)
    return Client(index, sock, leftover)


class Crowd:
    """Many clients; `pump` reads whatever has arrived and calls `on_message(client, payload)`."""

    def __init__(self, on_message: Callable[[Client, bytes], None]):
        self.clients: list[Client] = []
        self.on_message = on_message
        self._selector = selectors.DefaultSelector()

    def add(self, port: int, username: str, query: str = "") -> Client:
        client = connect(port, username, len(self.clients), query)
        self.clients.append(client)
        self._selector.register(client.sock, selectors.EVENT_READ, client)
        return client

    def send(self, client: Client, frame: dict) -> None:
        """Send one frame; a full socket buffer is waited out (bounded by the handshake timeout)."""
        client.sock.setblocking(True)
        client.sock.settimeout(HANDSHAKE_TIMEOUT)
        try:
            client.send_json(frame)
        finally:
            client.sock.setblocking(False)

    def pump_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Read and dispatch until `done()` or `timeout` seconds; True if done."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for key, _ in self._selector.select(min(left, 0.5)):
                self._read(key.data)
        return True

    def _read(self, client: Client) -> None:
        try:
            chunk = client.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            client.closed = True
            self._selector.unregister(client.sock)
            return
        if client.leftover:
            chunk, client.leftover = client.leftover + chunk, b""
        for _, opcode, payload in client.parser.feed(chunk):
            if opcode == OP_TEXT:
                self.on_message(client, payload)
            elif opcode == OP_PING:
                client.sock.sendall(client_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                client.closed = True
                client.close_code = parse_close(payload)[0]

    def close(self) -> None:
        for client in self.clients:
            try:
                client.sock.close()
            except OSError:
                pass
        self._selector.close()
