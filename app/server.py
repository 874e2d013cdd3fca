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

And what the stock servers do not do (`SharesDescriptors`, in all three run
modes): count every accepted socket against its address from `accept()` on,
closing one over the address's share of file descriptors at once, and turn
running out of descriptors (EMFILE) into a brief pause of the accept loop with
one log line, where gevent printed a traceback per attempt.

This is the one module that touches the internals of the servers we run
under (pinned in requirements.txt; tests/test_library_shims.py checks them):

- gevent 26.9.0: it overrides `WSGIHandler._write_with_headers` and uses what
  that uses (`_sendall`, `_write`, `finalize_headers`, `status`,
  `response_headers`, `response_use_chunked`, `response_length`,
  `headers_sent`). The rest are WSGIHandler's documented methods
  (`read_requestline`, `read_request`, `handle_one_request`,
  `handle_one_response`). `SharesDescriptors` overrides the server's
  `do_read` (accept one connection: `(socket, address)` or None) and
  `do_close(socket, address)` (called once for every connection `do_read`
  returned, when its handler ends), and uses `start_accepting`,
  `stop_accepting` and `started`;
- gunicorn 27.0.1: the worker that `post_worker_init` gets has `wsgi`, `pid`,
  `alive` (its loop runs while it is true) and, for the gevent workers,
  `wsgi_handler` and `server_class` (read after the hook, when the worker
  starts serving: `server_class(listener, application=, spawn=, log=,
  handler_class=, environ=)`, or, when it is None as in `-k gevent`, a
  `StreamServer(listener, handle=partial(worker.handle, listener), spawn=)`);
  its async workers take a StopIteration out of the WSGI call as "the app
  answered by itself: close the connection" (`AnsweredUnderGunicorn`); and
  its HTTP/1 parser builds each request as `RequestParser.mesg_class`, a
  `Request` whose `parse_request_line(line_bytes)` reads the request line
  (`Utf8TargetRequest`).
"""

from __future__ import annotations

import errno
import logging
import resource
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, BinaryIO, NoReturn

import gevent
from flask import Flask, Response
from gevent.pywsgi import WSGIServer
from gevent.server import StreamServer
from gevent.socket import socket as GeventSocket
from geventwebsocket.handler import WebSocketHandler
from gunicorn.http.message import Request as GunicornRequest

from actors import logfmt
from actors.chat.message import encode_error
from app import door
from app.ops.limits import AcceptedSockets, trusted_proxies
from app.ops.service import connections_of, cut_when_late
from app.target import escape_raw_bytes
from app.websocket.gevent_websocket_shim import AppUpgrades

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from gunicorn.workers.base import Worker

log = logging.getLogger("nane.server")

READ_BUFFER_BYTES = 2048

# Whom a socket is connected to, as accept() says: (host, port), (host, port, flow, scope)
# for IPv6, or a path for a Unix socket.
PeerAddress = tuple[str, int] | tuple[str, int, int, int] | str


class NaneWebSocketHandler(AppUpgrades):
    request_timeout = 75.0
    max_request_body_bytes = 65536
    _deadline: gevent.Timeout | None = None
    _cutter: gevent.Greenlet | None = None
    _refusal: tuple[str, str] | None = None

    def __init__(self, sock: GeventSocket, address: PeerAddress, server: StreamServer,
                 rfile: BinaryIO | None = None):
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

    def read_requestline(self) -> str:
        self._cancel_deadline()
        self._started = time.monotonic()
        self._deadline = gevent.Timeout.start_new(self.request_timeout)
        line = super().read_requestline()  # Latin-1 text, one character per byte
        return escape_raw_bytes(line.encode("latin-1")).decode("latin-1")

    def read_request(self, raw_requestline: str) -> bool:
        if not super().read_request(raw_requestline):
            return False
        # The head is in; the rest (body, answer) may take what is left of the deadline.
        # A timeout raised into gevent's request code would be logged as a crash: the
        # socket is shut down instead, which it drops quietly as a broken pipe.
        self._cancel_deadline()
        left = max(self.request_timeout - (time.monotonic() - self._started), 0.1)
        ours = door.of(self.application)
        self._cutter = cut_when_late(self.socket, left, self._remote(),
                                     ours.metrics.http_timeouts.inc if ours else lambda: None)
        self._refusal = None
        if any("\n" in value or "\r" in value for value in self.headers.values()):
            log.info("event=http_refused status=400 reason=folded_header remote=%s",
                     self._remote())
            return False  # gevent answers 400 Bad Request and closes
        if (self.content_length or 0) > self.max_request_body_bytes:
            self._refusal = ("413 Content Too Large",
                             f"request body larger than {self.max_request_body_bytes} bytes")
        return True

    def handle_one_response(self) -> None:
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
        return _host(self.client_address)

    def handle_one_request(self) -> tuple[str, bytes] | bool | None:
        """gevent's, bounded by the request deadline: None closes the connection, True reads
        the next request, (status, response) answers an error and closes."""
        try:
            return super().handle_one_request()
        except gevent.Timeout as timeout:
            if timeout is not self._deadline:
                raise
            log.info("event=http_timeout remote=%s seconds=%s", self._remote(),
                     self.request_timeout)
            ours = door.of(self.application)
            if ours is not None:
                ours.metrics.http_timeouts.inc()
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

    def _write_with_headers(self, data: bytes) -> None:
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


# -- file descriptors: a share per address, and a pause when they run out ----------

RESERVED_DESCRIPTORS = 64  # the process's own: the listener, logs, Redis, the event loop's
ACCEPT_PAUSE_SECONDS = 0.1  # no descriptor left: try accepting again after this


if TYPE_CHECKING:
    class _GeventServer(StreamServer):
        """To mypy, the mixin is the gevent server class it is mixed into."""
else:
    _GeventServer = object


class SharesDescriptors(_GeventServer):
    """A gevent server that counts every accepted socket against its address, and survives EMFILE.

    Mixed into the server class of every run mode (`server_class_for`). Each
    connection holds a file descriptor from `accept()` on, request or not;
    `sockets` (an `AcceptedSockets`) gives each address its share and the
    connection over it is closed at once, so one address holding idle
    connections cannot take the descriptors everybody else needs. When the
    process has none left anyway (many addresses at once), gevent's accept
    loop would print a traceback per attempt; instead it pauses for
    `ACCEPT_PAUSE_SECONDS` and logs one line per episode.
    """

    sockets: AcceptedSockets
    _out_of_descriptors = False

    def do_read(self) -> tuple[GeventSocket, PeerAddress] | None:
        try:
            accepted = super().do_read()
        except OSError as error:
            if error.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            self._pause_accepting(error)
            return None
        if accepted is None:
            return None
        self._out_of_descriptors = False
        sock, address = accepted
        remote = _host(address)
        if not self.sockets.admit(remote):
            if self.sockets.refused[remote] == 1:  # once per episode, not once per socket
                log.warning("event=sockets_refused remote=%s held=%d share=%d",
                            remote, self.sockets.held(remote), self.sockets.share)
            sock.close()
            return None
        return accepted

    def do_close(self, sock: GeventSocket, address: PeerAddress, *rest: object) -> None:
        try:
            super().do_close(sock, address, *rest)
        finally:
            self.sockets.release(_host(address))

    def _pause_accepting(self, error: OSError) -> None:
        if not self._out_of_descriptors:
            self._out_of_descriptors = True
            log.warning("event=accept_paused error=%s seconds=%s open_files_limit=%d",
                        errno.errorcode.get(error.errno or 0, error.errno), ACCEPT_PAUSE_SECONDS,
                        resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        self.stop_accepting()
        gevent.spawn_later(ACCEPT_PAUSE_SECONDS, self._accept_again)

    def _accept_again(self) -> None:
        if self.started:
            self.start_accepting()


def _host(address: PeerAddress) -> str:
    return address[0] if isinstance(address, tuple) else str(address)


def raise_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one, as far as the system lets us: (soft, hard) now.

    Every connection is a file descriptor, and the common default soft limit
    (1024) is far below what the hard limit allows.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass  # not ours to raise (a container may forbid it): keep what we have
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def accepted_sockets(app: Flask) -> AcceptedSockets:
    """This process's sockets per address: raise the file limit, work out the share, log both."""
    config = app.config["NANE"]
    before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    soft, hard = raise_file_limit()
    share = min(config.max_sockets_per_address,
                max(1, (soft - RESERVED_DESCRIPTORS) // 4))
    log.info("event=file_limit soft=%d hard=%d was=%d sockets_per_address=%d",
             soft, hard, before, share)
    return AcceptedSockets(share, trusted_proxies(config.forwarded_allow_ips))


def server_class_for(app: Flask, base: type) -> type:
    """`base` (a gevent server class) with this process's `SharesDescriptors`."""
    return type(base.__name__, (SharesDescriptors, base), {"sockets": accepted_sockets(app)})


def handler_for(app: Flask, base: type = NaneWebSocketHandler) -> type:
    """The handler class with this app's limits."""
    config = app.config["NANE"]
    return type("Handler", (base,), {"request_timeout": float(config.http_idle_timeout_seconds),
                                     "max_request_body_bytes": config.max_request_body_bytes})


def make_server(app: Flask, host: str, port: int) -> WSGIServer:
    server_class = server_class_for(app, WSGIServer)
    return server_class((host, port), app, handler_class=handler_for(app), log=None,
                        error_log=None)


def gunicorn_server_class(app: Flask, worker: Worker) -> Callable[..., StreamServer]:
    """The server class a gunicorn gevent worker starts, with `SharesDescriptors`.

    The pywsgi workers (GeventWebSocketWorker) name theirs in `server_class`;
    `-k gevent` has none and starts a plain StreamServer that calls the
    worker's `handle`: the same, built with the arguments `server_class` gets.
    """
    if worker.server_class is not None:
        return server_class_for(app, worker.server_class)
    streams = server_class_for(app, StreamServer)
    several_workers = worker.cfg.workers > 1

    def start(listener: GeventSocket, application: object = None, spawn: object = None,
              log: object = None, handler_class: object = None, environ: object = None,
              **ssl_args: object) -> StreamServer:
        server = streams(listener, handle=partial(worker.handle, listener), spawn=spawn,
                         **ssl_args)
        if several_workers:
            server.max_accept = 1  # as gunicorn does: let the other workers accept too
        return server

    return start


class Utf8TargetRequest(GunicornRequest):
    """gunicorn's request, taking raw UTF-8 in its target as the original does (app/target.py)."""

    def parse_request_line(self, line_bytes: bytes) -> None:
        return super().parse_request_line(escape_raw_bytes(line_bytes))


class AnsweredUnderGunicorn(Response):
    """After a websocket under `gunicorn -k gevent`: gunicorn writes nothing more, and closes."""

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> NoReturn:
        raise StopIteration


def prepare_gunicorn_worker(worker: Worker) -> None:
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
    if hasattr(worker, "server_class"):  # the gevent workers
        worker.server_class = gunicorn_server_class(app, worker)

    grace = app.config["NANE"].shutdown_grace_seconds

    def stop() -> None:
        if connections.stopping:
            return
        log.info("event=signal signal=SIGTERM worker=%s", worker.pid)
        worker.alive = False
        stop_gracefully(app, stop_accepting=lambda: None, grace=grace)

    import signal
    gevent.signal_handler(signal.SIGTERM, stop)
