"""gevent-websocket answers the handshake when the /ws view asks, then hands over the socket.

The one module that knows gevent-websocket's internals, written against
gevent-websocket 0.10.1 (pinned in requirements.txt; tests/test_library_shims.py
names the internal that moved when an installed version differs). What we rely on:

- `WebSocketHandler.upgrade_websocket()` checks the request and answers it with
  `start_response("101 ...")`, whose `_prepare_response` marks the connection
  to close after this request and the response as neither chunked nor sized;
  it sets `handler.websocket` and `environ["wsgi.websocket"]`;
- `WebSocketHandler.run_application` upgrades every upgrade request before the
  app runs. `AppUpgrades` runs gevent's plain `WSGIHandler.run_application`
  instead, so the view can still answer 401 or 503, and upgrades on request;
- a stock handler (a GeventWebSocketWorker started without gunicorn.conf.py)
  still upgrades first: its `wsgi.websocket` has `handler.socket` and
  `handler.rfile`;
- a `WebSocket` writes a close frame from `close()`, which `run_websocket`
  calls after the app returns and `__del__` calls when it is dropped, unless
  its `closed` is set: we set it before anything else, so gevent-websocket
  never writes after the 101 (app/websocket/transport.py does).
"""

from __future__ import annotations

from collections.abc import Iterable
from wsgiref.types import StartResponse, WSGIEnvironment

from flask import Response
from gevent.pywsgi import WSGIHandler
from geventwebsocket.handler import WebSocketHandler

from app.websocket import ClientGone, Upgraded

ACCEPT = "nane.gevent_websocket.accept"  # environ key: `AppUpgrades._accept` of this request


class _Answered(Response):
    """Nothing more to write: the 101 went out before, and the connection closes."""

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return []


class AppUpgrades(WebSocketHandler):
    """gevent-websocket's handler, except that the app decides whether to upgrade."""

    def run_application(self) -> None:
        self.environ[ACCEPT] = self._accept
        try:
            WSGIHandler.run_application(self)
        finally:
            self.environ.pop(ACCEPT, None)

    def _accept(self) -> Upgraded | None:
        self.upgrade_websocket()
        websocket = self.environ.pop("wsgi.websocket", None)
        if websocket is None:
            return None
        websocket.closed = True  # dropped now: its __del__ would write a close frame
        del self.websocket, websocket
        try:
            self.write(b"")  # the 101, now
        except ConnectionError as error:  # gevent marked the headers sent: it writes nothing more
            raise ClientGone(_Answered) from error
        self.upgraded()
        return Upgraded(self.socket, self.rfile, _Answered)

    def upgraded(self) -> None:
        """Called once the 101 is out: a subclass lifts what bounds an HTTP request."""


def serves(environ: dict) -> bool:
    """Whether gevent-websocket's handler serves this request (`python -m app`, the Procfile's worker)."""
    return ACCEPT in environ


def upgraded_already(environ: dict) -> Upgraded | None:
    """The socket a stock gevent-websocket handler upgraded before the app ran, if it did."""
    websocket = environ.get("wsgi.websocket")
    if websocket is None:
        return None
    websocket.closed = True  # its close(), after the app returns, would write a second close frame
    return Upgraded(websocket.handler.socket, websocket.handler.rfile, _Answered)


def accept(environ: dict) -> Upgraded | None:
    """Answer the handshake (101) and take the socket; None when gevent-websocket refused it.

    Raises:
        ClientGone: the client went away before the 101 was out.
    """
    return environ[ACCEPT]()
