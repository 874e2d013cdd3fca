"""Every library internal nane relies on, checked against the installed version.

Each library's internals are touched from one module, whose docstring names
the version it was written against; requirements.txt pins that version. A new
release may move what the module relies on: these tests then fail with the
library and the internal by name, before a run mode breaks in production.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import re
import socket
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# library (as pip names it) -> the one module that touches its internals
SHIMS = {
    "gevent": "app.server",
    "gevent-websocket": "app.websocket.gevent_websocket_shim",
    "gunicorn": "app.server",
}


def pinned(library: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(rf"{re.escape(library)}(\[[^\]]*\])?==([^\s#]+)", line.strip())
        if match:
            return match.group(2)
    raise AssertionError(f"{library}: not pinned with == in requirements.txt ({SHIMS[library]} "
                         "relies on its internals)")


def code(function) -> str:
    """A function's source with its whitespace squeezed, so reformatting is no change."""
    return " ".join(inspect.getsource(function).split())


def relies_on(library: str, internal: str, holds: bool) -> None:
    assert holds, (f"{library} {importlib.metadata.version(library)}: {internal} is not what "
                   f"{SHIMS[library]} relies on; re-check it (its docstring lists what it uses)")


@pytest.mark.parametrize("library", sorted(SHIMS))
def test_the_installed_version_is_the_pinned_one_the_shim_names(library):
    import importlib

    version = pinned(library)
    installed = importlib.metadata.version(library)
    assert installed == version, (
        f"{library} {installed} is installed, {SHIMS[library]} was written against {version}: "
        "re-check the internals it relies on, then pin the new version")
    module = importlib.import_module(SHIMS[library])
    assert f"{library} {version}" in " ".join(module.__doc__.split()), (
        f"{SHIMS[library]}'s docstring must name the version it was written against: "
        f"{library} {version}")


def test_gevent_wsgi_handler_internals():
    """app/server.py overrides `_write_with_headers` and reads the state it uses."""
    from gevent.pywsgi import WSGIHandler

    relies_on("gevent", "WSGIHandler._write_with_headers(self, data)",
              list(inspect.signature(WSGIHandler._write_with_headers).parameters) == ["self", "data"])
    relies_on("gevent", "WSGIHandler.write calling self._write_with_headers(data) first",
              "self._write_with_headers(data)" in code(WSGIHandler.write))
    old = code(WSGIHandler._write_with_headers)
    for step in ("self.headers_sent = True", "self.finalize_headers()", "self.status",
                 "self.response_headers", "self._sendall(towrite)", "self._write(data)"):
        relies_on("gevent", f"_write_with_headers doing `{step}`", step in old)
    relies_on("gevent", "WSGIHandler._sendall counting self.response_length",
              "self.response_length += len(data)" in code(WSGIHandler._sendall))
    relies_on("gevent", "WSGIHandler._write chunking when self.response_use_chunked",
              "if self.response_use_chunked:" in code(WSGIHandler._write))
    relies_on("gevent", "finalize_headers never chunking a 101",
              "self.connection_upgraded = self.code == 101" in code(WSGIHandler.finalize_headers))


def test_gevent_runs_the_app_then_writes_nothing_once_headers_are_sent():
    """AppUpgrades runs gevent's plain run_application; after a 101 the view's answer is []."""
    from gevent.pywsgi import WSGIHandler

    run = code(WSGIHandler.run_application)
    relies_on("gevent", "WSGIHandler.run_application calling the app, then process_result",
              "self.result = self.application(self.environ, self.start_response)" in run
              and "self.process_result()" in run)
    relies_on("gevent", "WSGIHandler.process_result writing headers only when not yet sent",
              "if self.status and not self.headers_sent:" in code(WSGIHandler.process_result))


def test_gevent_websocket_handler_internals():
    from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
    from geventwebsocket.handler import WebSocketHandler

    relies_on("gevent-websocket", "WebSocketHandler.run_application upgrading before the app",
              "self.result = self.upgrade_websocket()" in code(WebSocketHandler.run_application))
    relies_on("gevent-websocket", "WebSocketHandler.upgrade_websocket(self)",
              list(inspect.signature(WebSocketHandler.upgrade_websocket).parameters) == ["self"])
    upgrade = code(WebSocketHandler.upgrade_connection)
    relies_on("gevent-websocket", "upgrade_connection setting self.websocket and wsgi.websocket",
              "self.websocket = WebSocket(" in upgrade and "'wsgi.websocket': self.websocket" in upgrade)
    relies_on("gevent-websocket", "upgrade_connection answering with start_response('101 ...')",
              'self.start_response("101 Switching Protocols", headers)' in upgrade)
    prepare = code(WebSocketHandler._prepare_response)
    for step in ("self.provided_content_length = False", "self.response_use_chunked = False",
                 "self.close_connection = True"):
        relies_on("gevent-websocket", f"_prepare_response doing `{step}` for a websocket",
                  step in prepare)
    relies_on("gevent-websocket", "run_websocket closing only a websocket not closed yet",
              "if not self.websocket.closed: self.websocket.close()"
              in code(WebSocketHandler.run_websocket))
    relies_on("gevent-websocket", "GeventWebSocketWorker.wsgi_handler (gunicorn.conf.py swaps it)",
              GeventWebSocketWorker.wsgi_handler is WebSocketHandler)


def test_a_closed_gevent_websocket_writes_nothing():
    """A WebSocket's close() (from run_websocket and from __del__) is silent once `closed` is set."""
    from geventwebsocket.websocket import WebSocket

    relies_on("gevent-websocket", "WebSocket.__del__ calling close()",
              "self.close()" in code(WebSocket.__del__))
    relies_on("gevent-websocket", "WebSocket.__slots__ holding handler and closed",
              {"handler", "closed"} <= set(WebSocket.__slots__))
    relies_on("gevent-websocket", "WebSocket.close writing through send_frame",
              "self.send_frame(message, opcode=self.OPCODE_CLOSE)" in code(WebSocket.close))

    written = []

    class Handler:  # what close() reaches for: handler.server.application, handler.logger
        server = types.SimpleNamespace(application=None)
        logger = logging.getLogger("test_library_shims")

    class Stream:
        handler = Handler()
        read = None
        write = written.append

    websocket = WebSocket({}, Stream(), Handler())
    websocket.closed = True
    websocket.close()
    del websocket
    relies_on("gevent-websocket", "a WebSocket with closed set writing nothing on close()",
              written == [])


def test_gunicorn_hands_the_app_its_socket_as_gunicorn_socket():
    """app/websocket/handshake.py writes the 101 on `environ["gunicorn.socket"]` (`-k gevent`)."""
    from gunicorn.http import wsgi

    assert '"gunicorn.socket": sock' in code(wsgi.default_environ), (
        f"gunicorn {importlib.metadata.version('gunicorn')}: its environ no longer holds the "
        "connection's socket as gunicorn.socket, where app/websocket/handshake.py takes it")


# The 101 simple-websocket 1.1.0 wrote for RFC 6455's sample key, whatever else the request
# offered (permessage-deflate, subprotocols): ours must stay byte for byte the same.
SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
SWITCHING_PROTOCOLS = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")


def handshake_environ(sock: socket.socket) -> dict:
    return {"gunicorn.socket": sock, "REQUEST_METHOD": "GET", "HTTP_HOST": "localhost",
            "HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade",
            "HTTP_SEC_WEBSOCKET_VERSION": "13", "HTTP_SEC_WEBSOCKET_KEY": SAMPLE_KEY,
            "HTTP_SEC_WEBSOCKET_EXTENSIONS": "permessage-deflate",
            "HTTP_SEC_WEBSOCKET_PROTOCOL": "chat, superchat"}


def test_our_101_is_the_one_simple_websocket_wrote_then_silence():
    """The `-k gevent` handshake on a real socket pair: the same 101 bytes, then nothing."""
    from app.server import AnsweredUnderGunicorn
    from app.websocket import handshake

    server_side, client_side = socket.socketpair()
    with server_side, client_side:
        upgraded = handshake.accept(handshake_environ(server_side))
        upgraded.rfile.close()
        assert upgraded.socket is server_side and upgraded.answer is AnsweredUnderGunicorn
        client_side.settimeout(2)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += client_side.recv(4096)
        assert answer == SWITCHING_PROTOCOLS
        client_side.setblocking(False)
        with pytest.raises(BlockingIOError):
            more = client_side.recv(4096)
            pytest.fail(f"the handshake wrote after the 101: {more!r}")


def test_a_client_gone_before_the_101_is_client_gone():
    from app.server import AnsweredUnderGunicorn
    from app.websocket import ClientGone, handshake

    server_side, client_side = socket.socketpair()
    with server_side:
        client_side.close()
        with pytest.raises(ClientGone) as gone:
            handshake.accept(handshake_environ(server_side))
    assert gone.value.answer is AnsweredUnderGunicorn


def test_gunicorn_worker_internals():
    """prepare_gunicorn_worker swaps the handler and stops the worker's loop on SIGTERM."""
    from gunicorn.workers.base import Worker
    from gunicorn.workers.ggevent import GeventPyWSGIWorker, GeventWorker

    init = code(Worker.init_process)
    relies_on("gunicorn", "Worker.init_process calling post_worker_init before run()",
              "self.cfg.post_worker_init(self)" in init
              and init.index("self.cfg.post_worker_init(self)") < init.index("self.run()"))
    relies_on("gunicorn", "Worker.load_wsgi setting worker.wsgi",
              "self.wsgi = self.app.wsgi()" in code(Worker.load_wsgi))
    relies_on("gunicorn", "Worker.__init__ setting worker.alive and worker.pid",
              "self.alive = True" in code(Worker.__init__) and "self.pid" in code(Worker.__init__))
    run = code(GeventWorker.run)
    relies_on("gunicorn", "GeventWorker.run serving with self.wsgi_handler while self.alive",
              "handler_class=self.wsgi_handler" in run and "while self.alive:" in run)
    relies_on("gunicorn", "GeventPyWSGIWorker.wsgi_handler", hasattr(GeventPyWSGIWorker, "wsgi_handler"))


def test_raw_utf8_request_lines_are_read_where_each_server_reads_them():
    """app/server.py escapes raw bytes in gevent's read_requestline and gunicorn's request class."""
    from gevent.pywsgi import WSGIHandler
    from gunicorn.http.message import Request
    from gunicorn.http.parser import RequestParser

    from app.server import Utf8TargetRequest

    relies_on("gevent", "WSGIHandler.read_requestline returning the line as Latin-1 text",
              "line.decode('latin-1')" in code(WSGIHandler.read_requestline))
    relies_on("gunicorn", "RequestParser building each request as self.mesg_class(...)",
              RequestParser.mesg_class in (Request, Utf8TargetRequest)
              and "self.mesg_class(" in code(RequestParser.__next__))
    relies_on("gunicorn", "Request.parse_request_line(self, line_bytes)",
              list(inspect.signature(Request.parse_request_line).parameters) == ["self", "line_bytes"])
    relies_on("gunicorn", "Request reading its request line through self.parse_request_line(line)",
              "self.parse_request_line(line)" in inspect.getsource(Request))


def test_gunicorn_async_worker_closes_on_stop_iteration():
    """After a websocket, the -k gevent answer raises StopIteration: gunicorn then just closes."""
    from gunicorn.http import wsgi
    from gunicorn.workers.base_async import AsyncWorker
    from gunicorn.workers.ggevent import GeventWorker

    relies_on("gunicorn", "GeventWorker being an AsyncWorker", issubclass(GeventWorker, AsyncWorker))
    relies_on("gunicorn", "AsyncWorker.handle_request re-raising StopIteration",
              "except StopIteration: raise" in code(AsyncWorker.handle_request))
    relies_on("gunicorn", "AsyncWorker.handle ending the connection on StopIteration",
              'except StopIteration as e: self.log.debug("Closing connection. %s", e)'
              in code(AsyncWorker.handle))
    relies_on("gunicorn", "the WSGI environ carrying the connection as gunicorn.socket",
              '"gunicorn.socket": sock' in code(wsgi.default_environ))


def test_gevent_server_accept_and_close_hooks():
    """SharesDescriptors (app/server.py) overrides do_read and do_close of gevent's servers."""
    from gevent import baseserver
    from gevent.pywsgi import WSGIServer
    from gevent.server import StreamServer

    read = code(baseserver.BaseServer._do_read)
    relies_on("gevent", "BaseServer._do_read taking do_read()'s None as 'nothing to accept'",
              "args = self.do_read()" in read and "if not args: return" in read)
    relies_on("gevent", "BaseServer.do_handle closing every handled connection with do_close",
              "close = self.do_close" in code(baseserver.BaseServer.do_handle)
              and "close(*args_tuple)" in code(baseserver._handle_and_close_when_done))
    relies_on("gevent", "StreamServer.do_read answering (socket, address)",
              "return sock, address" in code(StreamServer.do_read))
    relies_on("gevent", "StreamServer.do_close(sock, *args)",
              list(inspect.signature(StreamServer.do_close).parameters) == ["self", "sock", "args"])
    relies_on("gevent", "WSGIServer being a StreamServer", issubclass(WSGIServer, StreamServer))
    for method in ("start_accepting", "stop_accepting"):
        relies_on("gevent", f"BaseServer.{method}", callable(getattr(baseserver.BaseServer, method)))
    relies_on("gevent", "BaseServer.started", isinstance(baseserver.BaseServer.started, property))


def test_gunicorn_gevent_workers_start_their_server_class():
    """gunicorn_server_class (app/server.py) replaces the gevent workers' `server_class`."""
    from gunicorn.workers.ggevent import GeventPyWSGIWorker, GeventWorker

    run = code(GeventWorker.run)
    relies_on("gunicorn", "GeventWorker.run calling self.server_class(s, application=, spawn=, "
              "log=, handler_class=, environ=)",
              "server = self.server_class( s, application=self.wsgi, spawn=pool, log=self.log, "
              "handler_class=self.wsgi_handler, environ=environ," in run)
    relies_on("gunicorn", "GeventWorker.run otherwise starting StreamServer(s, handle=partial("
              "self.handle, s), spawn=pool)",
              "hfun = partial(self.handle, s) server = StreamServer(s, handle=hfun, spawn=pool,"
              in run and "server.max_accept = 1" in run)
    relies_on("gunicorn", "GeventWorker.server_class None, GeventPyWSGIWorker's a class",
              GeventWorker.server_class is None and isinstance(GeventPyWSGIWorker.server_class, type))
