"""The embedded server: gevent's WSGI server with gevent-websocket's handler, tuned.

The same handler serves gunicorn's GeventWebSocketWorker (gunicorn.conf.py puts
it in place). What the stock handler does not do:

- refuse a nameless `/ws` with HTTP 401, and a full or stopping server with
  503, before the upgrade (SPEC): the handler then leaves the request to the app;
- drop a connection that has not sent a complete request head within
  `http_idle_timeout_seconds` (since it opened, or since its last answer), so
  idle or trickling clients cannot hold connections forever;
- switch off Nagle's algorithm on every accepted socket, so small frames leave
  at once instead of waiting for delayed ACKs.
"""

from __future__ import annotations

import logging
import socket

import gevent
from gevent.pywsgi import WSGIServer
from geventwebsocket.handler import WebSocketHandler

from app.ops import connections_of
from app.ws import username_from_query

log = logging.getLogger("nane.server")

READ_BUFFER_BYTES = 2048


class NaneWebSocketHandler(WebSocketHandler):
    max_username_length = 50
    request_timeout = 75.0
    _deadline: gevent.Timeout | None = None

    def __init__(self, sock, address, server, rfile=None):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if rfile is None:
            # gevent's default read buffer is 8 KB per connection, held for a
            # websocket's whole life; request heads and chat frames are small, and
            # a bigger read bypasses the buffer anyway.
            rfile = sock.makefile("rb", READ_BUFFER_BYTES)
        super().__init__(sock, address, server, rfile)

    # -- the request head must arrive in time ---------------------------------

    def read_requestline(self):
        self._cancel_deadline()
        self._deadline = gevent.Timeout.start_new(self.request_timeout)
        return super().read_requestline()

    def read_request(self, raw_requestline):
        try:
            return super().read_request(raw_requestline)
        finally:
            self._cancel_deadline()

    def handle_one_request(self):
        try:
            return super().handle_one_request()
        except gevent.Timeout as timeout:
            if timeout is not self._deadline:
                raise
            log.info("event=http_timeout remote=%s seconds=%s", self.client_address[0]
                     if isinstance(self.client_address, tuple) else self.client_address,
                     self.request_timeout)
            metrics = getattr(self.application, "extensions", {}).get("nane_metrics")
            if metrics is not None:
                metrics.http_timeouts.inc()
            return None  # close the connection
        finally:
            self._cancel_deadline()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.close()
            self._deadline = None

    # -- one send per response ---------------------------------------------------

    def _write_with_headers(self, data):
        """The status line, headers and a whole body in ONE send.

        gevent writes headers and body in two sends; with a keep-alive client
        that costs a second packet and a system call on every API answer.
        (gevent's own method, joined; chunked bodies keep gevent's path.)
        """
        self.headers_sent = True
        self.finalize_headers()
        head = bytearray(b"HTTP/1.1 ")
        head += self.status
        head += b"\r\n"
        for header, value in self.response_headers:
            head += header + b": " + value + b"\r\n"
        head += b"\r\n"
        if self.response_use_chunked:
            self._sendall(head)
            self._write(data)
        else:
            if data:  # gevent-websocket writes '' after its 101
                head += data
            self._sendall(head)

    # -- who may upgrade -------------------------------------------------------

    def upgrade_websocket(self):
        if self.environ.get("PATH_INFO") == "/ws":
            if not username_from_query(self.environ.get("QUERY_STRING", ""),
                                       self.max_username_length):
                return None  # not upgraded: the app answers 401
            connections = connections_of(self.application)
            if connections is not None and connections.acquire(self.environ) is not None:
                return None  # not upgraded: the app answers 503
        return super().upgrade_websocket()

    def run_application(self):
        try:
            super().run_application()
        finally:
            connections = connections_of(self.application)
            if connections is not None and self.environ is not None:
                connections.release(self.environ)


def handler_for(app, base: type = NaneWebSocketHandler) -> type:
    """The handler class with this app's limits."""
    config = app.config["NANE"]
    return type("Handler", (base,), {"max_username_length": config.max_username_length,
                                     "request_timeout": float(config.http_idle_timeout_seconds)})


def make_server(app, host: str, port: int) -> WSGIServer:
    return WSGIServer((host, port), app, handler_class=handler_for(app), log=None,
                      error_log=None)


def prepare_gunicorn_worker(worker) -> None:
    """gunicorn's `post_worker_init` hook: our handler and our graceful SIGTERM in its worker.

    gunicorn's own SIGTERM handling only stops accepting and waits for requests
    to end, and a websocket never ends by itself: the worker would sit out the
    whole graceful_timeout and be killed with every client seeing a dropped
    connection. We take SIGTERM over: tell gunicorn's loop to stop (it closes
    the listener within a second), then close every websocket with 1001.
    """
    from app.ops import stop_gracefully

    app = worker.wsgi
    if connections_of(app) is None:
        return  # not our app
    if isinstance(getattr(worker, "wsgi_handler", None), type) and issubclass(
            worker.wsgi_handler, WebSocketHandler):
        worker.wsgi_handler = handler_for(app)

    grace = app.config["NANE"].shutdown_grace_seconds

    def stop() -> None:
        if connections_of(app).stopping:
            return
        log.info("event=signal signal=SIGTERM worker=%s", worker.pid)
        worker.alive = False
        stop_gracefully(app, stop_accepting=lambda: None, grace=grace)

    import signal
    gevent.signal_handler(signal.SIGTERM, stop)
