"""The embedded server: gevent's WSGI server with gevent-websocket's handler, tuned.

Two things the stock handler does not do: refuse a nameless `/ws` with HTTP 401
before the upgrade (SPEC), and switch off Nagle's algorithm on every accepted
socket, so small frames leave at once instead of waiting for delayed ACKs.
"""

from __future__ import annotations

import socket

from gevent.pywsgi import WSGIServer
from geventwebsocket.handler import WebSocketHandler

from app.ws import username_from_query


class NaneWebSocketHandler(WebSocketHandler):
    max_username_length = 50

    def __init__(self, sock, address, server, rfile=None):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        super().__init__(sock, address, server, rfile)

    def upgrade_websocket(self):
        if self.environ.get("PATH_INFO") == "/ws" and not username_from_query(
                self.environ.get("QUERY_STRING", ""), self.max_username_length):
            return None  # not upgraded: the app answers 401
        return super().upgrade_websocket()


def make_server(app, host: str, port: int) -> WSGIServer:
    handler = type("Handler", (NaneWebSocketHandler,),
                   {"max_username_length": app.config["NANE"].max_username_length})
    return WSGIServer((host, port), app, handler_class=handler, log=None,
                      error_log=None)
