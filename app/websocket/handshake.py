"""Under `gunicorn -k gevent`, our own `101 Switching Protocols`; the socket is then ours.

gunicorn's plain gevent worker knows nothing of websockets, but it hands the
app the connection's socket under a documented environ key,
`gunicorn.socket`. By the time `accept` runs, app/websocket/route.py has
checked the request (`handshake_refusal`: an HTTP/1.1 GET, `Upgrade`,
`Connection`, version 13, a 16-byte key), so all that is left is the answer
RFC 6455 4.2.2 asks for, written on that socket: the status line,
`Upgrade`, `Connection` and `Sec-WebSocket-Accept`, and nothing more. No
extension and no subprotocol is ever accepted, so client frames stay the plain
RFC 6455 frames the transport reads.

After the connection, gunicorn is told to write nothing more
(app/server.py's `AnsweredUnderGunicorn`).
"""

from __future__ import annotations

import base64
import hashlib
import socket
from collections.abc import Mapping
from io import BufferedIOBase
from typing import cast

from app.server import READ_BUFFER_BYTES, AnsweredUnderGunicorn
from app.websocket import ClientGone, Upgraded

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3: the same for every server


def accept_key(key: str) -> str:
    """`Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`: base64(SHA-1(key + GUID))."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + GUID).digest()).decode("ascii")


def switching_protocols(key: str) -> bytes:
    """The whole 101 answer to a handshake that sent `key`, head and blank line."""
    return (b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key).encode("ascii") + b"\r\n\r\n")


def accept(environ: Mapping[str, object]) -> Upgraded:
    """Answer the handshake (101) on `gunicorn.socket` and take the socket.

    Raises:
        ClientGone: the client went away before the 101 was out.
    """
    sock = cast(socket.socket, environ["gunicorn.socket"])  # gevent's, under `-k gevent`
    key = str(environ["HTTP_SEC_WEBSOCKET_KEY"]).strip()
    try:
        sock.sendall(switching_protocols(key))
    except ConnectionError as error:
        raise ClientGone(AnsweredUnderGunicorn) from error
    rfile = cast(BufferedIOBase, sock.makefile("rb", READ_BUFFER_BYTES))  # a BufferedReader
    return Upgraded(sock, rfile, AnsweredUnderGunicorn)
