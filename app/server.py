"""The embedded server: gevent's WSGI server with gevent-websocket's handler, tuned.

The same handler serves gunicorn's GeventWebSocketWorker (gunicorn.conf.py puts
it in place). It upgrades only when the /ws view asks (app/websocket/route.py,
through app/websocket/gevent_websocket_shim.py), so that a refused client gets
its HTTP answer before the upgrade. What the stock handler does not do:

- drop a connection whose request (head, body and answer) is not done within
  `http_idle_timeout_seconds` (since it opened, or since its last answer), so
  idle, trickling or never-reading clients cannot hold connections forever;
- refuse a body larger than `max_request_body_bytes` with 413 without reading
  it, and a header folded over lines (obsolete in RFC 9112) with 400;
- write an answer's head and body with one vectored send, without copying
  the body (a room's history is cached once and shared by every reader);
- switch off Nagle's algorithm on every accepted socket, so small frames leave
  at once instead of waiting for delayed ACKs;
- read raw UTF-8 in a request line as the original does: its bytes over 0x7F
  are percent-encoded as the line is read (app/target.py says why), here for
  gevent and, through `Utf8TargetRequest`, for gunicorn's own parser
  (`-k gevent`), which would refuse them with 400.

This is the one module that touches the internals of the servers we run
under (pinned in requirements.txt; tests/test_library_shims.py checks them):

- gevent 26.9.0: it overrides `WSGIHandler._write_with_headers` and uses what
  that uses (`_sendall`, `_write`, `finalize_headers`, `status`,
  `response_headers`, `response_use_chunked`, `response_length`,
  `headers_sent`). The rest are WSGIHandler's documented methods
  (`read_requestline`, `read_request`, `handle_one_request`,
  `handle_one_response`);
- gunicorn 27.0.1: the worker that `post_worker_init` gets has `wsgi`, `pid`,
  `alive` (its loop runs while it is true) and, for the gevent workers,
  `wsgi_handler` (read after the hook, when the worker starts serving); and
  its async workers take a StopIteration out of the WSGI call as "the app
  answered by itself: close the connection" (`AnsweredUnderGunicorn`);
  its HTTP/1 parser builds each request as `RequestParser.mesg_class`, a
  `Request` whose `parse_request_line(line_bytes)` reads the request line
  (`Utf8TargetRequest`).
"""

from __future__ import annotations

import logging
import socket
import time

import gevent
from flask import Response
from gevent.pywsgi import WSGIServer
from geventwebsocket.handler import WebSocketHandler
from gunicorn.http.message import Request as GunicornRequest

from actors import logfmt
from actors.chat.message import encode_error
from app.ops.service import connections_of, cut_when_late
from app.target import escape_raw_bytes
from app.websocket.gevent_websocket_shim import AppUpgrades

log = logging.getLogger("nane.server")

READ_BUFFER_BYTES = 2048


class NaneWebSocketHandler(AppUpgrades):
    request_timeout = 75.0
    max_request_body_bytes = 65536
    _deadline: gevent.Timeout | None = None
    _cutter: gevent.Greenlet | None = None
    _refusal: tuple[str, str] | None = None

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

    # -- the whole request must be done in time ---------------------------------

    def read_requestline(self):
        self._cancel_deadline()
        self._started = time.monotonic()
        self._deadline = gevent.Timeout.start_new(self.request_timeout)
        line = super().read_requestline()  # Latin-1 text, one character per byte
        return escape_raw_bytes(line.encode("latin-1")).decode("latin-1")

    def read_request(self, raw_requestline):
        if not super().read_request(raw_requestline):
            return False
        # The head is in; the rest (body, answer) may take what is left of the deadline.
        # A timeout raised into gevent's request code would be logged as a crash: the
        # socket is shut down instead, which it drops quietly as a broken pipe.
        self._cancel_deadline()
        left = max(self.request_timeout - (time.monotonic() - self._started), 0.1)
        metrics = getattr(self.application, "extensions", {}).get("nane_metrics")
        self._cutter = cut_when_late(self.socket, left, self._remote(),
                                     metrics.http_timeouts.inc if metrics else lambda: None)
        self._refusal = None
        if any("\n" in value or "\r" in value for value in self.headers.values()):
            log.info("event=http_refused status=400 reason=folded_header remote=%s",
                     self._remote())
            return False  # gevent answers 400 Bad Request and closes
        if (self.content_length or 0) > self.max_request_body_bytes:
            self._refusal = ("413 Content Too Large",
                             f"request body larger than {self.max_request_body_bytes} bytes")
        return True

    def handle_one_response(self):
        if self._refusal is None:
            return super().handle_one_response()
        status, reason = self._refusal  # answered without reading a byte of the body
        log.info("event=http_refused status=%s reason=%s remote=%s", status[:3], logfmt.value(reason),
                 self._remote())
        body = encode_error(reason)
        self.close_connection = True
        self._sendall((f"HTTP/1.1 {status}\r\nContent-Type: application/json; charset=utf-8\r\n"
                       f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
                      + body)

    def upgraded(self) -> None:
        self._cancel_deadline()  # a websocket lives as long as it likes

    def _remote(self) -> str:
        address = self.client_address
        return address[0] if isinstance(address, tuple) else str(address)

    def handle_one_request(self):
        try:
            return super().handle_one_request()
        except gevent.Timeout as timeout:
            if timeout is not self._deadline:
                raise
            log.info("event=http_timeout remote=%s seconds=%s", self._remote(),
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
        if self._cutter is not None:
            self._cutter.kill(block=False)
            self._cutter = None

    # -- one send per response ---------------------------------------------------

    def _write_with_headers(self, data):
        """The status line, headers and a whole body in ONE vectored send, body not copied.

        gevent writes headers and body in two sends; with a keep-alive client
        that costs a second packet and a system call on every API answer.
        (gevent's own method; chunked bodies keep gevent's path.) The body is
        often a room's cached history, shared by every reader: a reader that
        never reads holds a reference to it, not a copy, until the request
        deadline drops it.
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
        elif data:  # gevent-websocket writes '' after its 101
            self._send_parts(bytes(head), data)
        else:
            self._sendall(head)

    def _send_parts(self, head: bytes, body: bytes) -> None:
        views = [memoryview(head), memoryview(body)]
        while views:
            sent = self.socket.sendmsg(views)
            self.response_length += sent
            while views and sent >= len(views[0]):
                sent -= len(views.pop(0))
            if sent:
                views[0] = views[0][sent:]


def handler_for(app, base: type = NaneWebSocketHandler) -> type:
    """The handler class with this app's limits."""
    config = app.config["NANE"]
    return type("Handler", (base,), {"request_timeout": float(config.http_idle_timeout_seconds),
                                     "max_request_body_bytes": config.max_request_body_bytes})


def make_server(app, host: str, port: int) -> WSGIServer:
    return WSGIServer((host, port), app, handler_class=handler_for(app), log=None,
                      error_log=None)


class Utf8TargetRequest(GunicornRequest):
    """gunicorn's request, taking raw UTF-8 in its target as the original does (app/target.py)."""

    def parse_request_line(self, line_bytes):
        return super().parse_request_line(escape_raw_bytes(line_bytes))


class AnsweredUnderGunicorn(Response):
    """After a websocket under `gunicorn -k gevent`: gunicorn writes nothing more, and closes."""

    def __call__(self, environ, start_response):
        raise StopIteration


def prepare_gunicorn_worker(worker) -> None:
    """gunicorn's `post_worker_init` hook: our handler and our graceful SIGTERM in its worker.

    gunicorn's own SIGTERM handling only stops accepting and waits for requests
    to end, and a websocket never ends by itself: the worker would sit out the
    whole graceful_timeout and be killed with every client seeing a dropped
    connection. We take SIGTERM over: tell gunicorn's loop to stop (it closes
    the listener within a second), then close every websocket with 1001.
    """
    from gunicorn.http.parser import RequestParser

    from app.ops.service import stop_gracefully

    app = worker.wsgi
    connections = connections_of(app)
    if connections is None:
        return  # not our app
    RequestParser.mesg_class = Utf8TargetRequest  # `-k gevent`: gunicorn parses requests itself
    if isinstance(getattr(worker, "wsgi_handler", None), type) and issubclass(
            worker.wsgi_handler, WebSocketHandler):
        worker.wsgi_handler = handler_for(app)

    grace = app.config["NANE"].shutdown_grace_seconds

    def stop() -> None:
        if connections.stopping:
            return
        log.info("event=signal signal=SIGTERM worker=%s", worker.pid)
        worker.alive = False
        stop_gracefully(app, stop_accepting=lambda: None, grace=grace)

    import signal
    gevent.signal_handler(signal.SIGTERM, stop)
