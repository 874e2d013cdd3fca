"""Under `gunicorn -k gevent`, simple-websocket answers the handshake; the socket is then ours.

The one module that knows simple-websocket's internals, written against
simple-websocket 1.1.0 (pinned in requirements.txt; tests/test_library_shims.py
names the internal that moved when an installed version differs). What we
rely on:

- `Server.accept(environ, thread_class=...)` answers the handshake at once, on
  `environ["gunicorn.socket"]`, then starts `thread_class(target=...)`. We pass
  a thread that never starts: its background reader would answer pings and
  closes on the socket behind the transport's back (two writers) and queue
  whole messages in `input_buffer` without bound;
- `Server.sock` is the upgraded socket. The `Server` (and wsproto's state in
  it) is dropped right after, so nothing of simple-websocket can write again;
- it accepts permessage-deflate when offered: the request's
  `Sec-WebSocket-Extensions` is dropped first, so client frames stay the
  plain RFC 6455 frames the transport reads.

After the connection, gunicorn is told to write nothing more
(app/server.py's `AnsweredUnderGunicorn`).
"""

from __future__ import annotations

from simple_websocket import Server

from app.server import READ_BUFFER_BYTES, AnsweredUnderGunicorn
from app.websocket import ClientGone, Upgraded


class NeverStarted:
    """A `thread_class` for simple-websocket whose thread never runs: the transport reads."""

    def __init__(self, target=None, **kwargs):
        self.name = "simple_websocket reader (never started)"

    def start(self) -> None:
        pass


def accept(environ: dict) -> Upgraded:
    """Answer the handshake (101) and take the socket.

    Raises:
        ClientGone: the client went away before the 101 was out.
    """
    environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
    try:
        sock = Server.accept(environ, thread_class=NeverStarted).sock
    except ConnectionError as error:
        raise ClientGone(AnsweredUnderGunicorn) from error
    return Upgraded(sock, sock.makefile("rb", READ_BUFFER_BYTES), AnsweredUnderGunicorn)
