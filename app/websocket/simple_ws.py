"""Under `gunicorn -k gevent`, simple-websocket (through flask-sock) does the handshake; we do the rest.

The one module that knows simple-websocket's internals. Its version is pinned
in requirements.txt, and tests/test_abuse.py::test_simple_websocket_is_still_what_simple_ws_expects
fails loudly when they change. What we rely on:

- `Server(environ, thread_class=...)`: we pass a thread that never starts. Its
  background reader would otherwise answer pings by writing to the socket
  behind the session's back (two writers: `ConcurrentObjectUseError`, a dead
  thread, a leaked connection slot) and queue whole messages in
  `input_buffer` without bound;
- `Server.sock`: after the handshake, the socket is ours (app/websocket/transport.py);
- `Server.connected = False`: its `close()`, which flask-sock calls when the
  route returns, then writes nothing.

The request's `Sec-WebSocket-Extensions` is dropped before the handshake: no
permessage-deflate, so client frames are plain RFC 6455 frames our reader
understands.
"""

from __future__ import annotations

from app.ops.service import HTTP_CUTTER

READ_BUFFER_BYTES = 2048


class NeverStarted:
    """A `thread_class` for simple-websocket whose thread never runs: we read the socket."""

    def __init__(self, target=None, **kwargs):
        self.name = "simple_websocket reader (never started)"

    def start(self) -> None:
        pass


SERVER_OPTIONS = {"thread_class": NeverStarted}


def before_handshake(environ: dict) -> None:
    """No extensions: our reader takes plain frames only."""
    environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)


def take_over(ws):
    """The upgraded socket and a read buffer over it; simple-websocket will not touch either."""
    ws.connected = False
    cutter = ws.environ.get(HTTP_CUTTER)
    if cutter is not None:
        cutter.kill()  # an HTTP request's deadline (app/ops/service.py), not a websocket's
    return ws.sock, ws.sock.makefile("rb", READ_BUFFER_BYTES)
