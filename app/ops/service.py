"""Operations: the connection limit, graceful stop, health, readiness, metrics and debug views.

`Connections` counts open websockets and says no past `max_connections` or
once a stop has begun. `stop_gracefully` is the one shutdown sequence every
run mode uses (`python -m app` and both gunicorn workers, see gunicorn.conf.py):

1. refuse new websockets and new messages, and stop accepting connections;
2. let the sequencer hand every message it accepted to the hub, then every
   session writes what is already in its outbox and closes with 1001
   (`Chat.stop_gracefully`);
3. a session still writing when half the grace period is gone is cut off
   (its 1001 close frame is still tried, for at most a second);
4. wait for the connections to end, and leave a second for the server to exit.
"""

from __future__ import annotations

import gc
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import gevent
import greenlet
from flask import Blueprint, Flask, Response, request
from gevent.event import Event

from actors.chat.message import encode_error, encode_result
from app import door
from app.api.routes import JSON
from app.ops.limits import AddressLimits, AddressShare, client_address

log = logging.getLogger("nane.ops")

SLOT = "nane.connection_slot"  # the environ key that marks a request holding a websocket slot

bp = Blueprint("ops", __name__)


class Connections:
    """Open websocket connections, bounded by `max_connections`.

    A slot is taken before the upgrade (so a full server can still answer 503)
    and given back when the request ends, whichever code path ends it: both
    are keyed on the request's WSGI environ, so taking and giving back are
    idempotent.
    """

    FULL = "server full, try again later"
    STOPPING = "server shutting down"
    ADDRESS_FULL = "too many connections from your address"

    def __init__(self, max_connections: int, addresses: AddressLimits | None = None,
                 trusted_proxies: frozenset[str] = frozenset()) -> None:
        self.max = max_connections
        self.open = 0
        self.stopping = False
        self.idle = Event()
        self.idle.set()
        self.addresses = addresses or AddressLimits(max_connections, 1 << 30)
        self.trusted_proxies = trusted_proxies
        # what every connection's reader asks before it accepts a message: one function for
        # all of them (a closure per connection would be bytes every idle connection holds)
        self.is_stopping: Callable[[], bool] = lambda: self.stopping

    def address_of(self, environ: dict[str, Any]) -> str:
        """The client address this request counts against (see `limits.client_address`)."""
        return client_address(environ, self.trusted_proxies)

    def share_of(self, address: str) -> AddressShare:
        """What `address`'s connections may still send together (for one more connection)."""
        return self.addresses.share(address)

    def acquire(self, environ: dict[str, Any]) -> str | None:
        """Take a slot for this request: None when taken (or already held), else why not."""
        if environ.get(SLOT):
            return None
        if self.stopping:
            return self.STOPPING
        if self.open >= self.max:
            return self.FULL
        address = self.address_of(environ)
        if not self.addresses.acquire(address):
            return self.ADDRESS_FULL
        self.open += 1
        environ[SLOT] = address
        self.idle.clear()
        return None

    def release(self, environ: dict[str, Any]) -> None:
        address = environ.pop(SLOT, None)
        if isinstance(address, str):
            self.addresses.release(address)
            self.open -= 1
            if self.open <= 0:
                self.idle.set()


def connections_of(app: object) -> Connections | None:
    """The `Connections` of a WSGI app, if it is ours (the server handler asks this)."""
    nane = door.of(app)
    return nane.connections if nane is not None else None


def stop_gracefully(app: Flask, stop_accepting: Callable[[], None], grace: float) -> None:
    """Close every websocket with 1001 after its outbox drains; return within `grace` - 1 s."""
    started = time.monotonic()
    nane = door.of(app)
    assert nane is not None, "an app made by create_app"
    connections, chat = nane.connections, nane.chat
    if connections.stopping:
        return
    connections.stopping = True
    deadline = started + max(grace - 1.0, 0.5)
    drain_until = started + max(grace / 2 - 1.0, 0.25)
    log.info("event=shutdown_begin connections=%d grace=%ss", connections.open, grace)
    try:
        stop_accepting()
    except Exception:
        log.exception("event=stop_accepting_failed")
    sessions, cut_off = chat.stop_gracefully(drain_until - time.monotonic())
    connections.idle.wait(timeout=max(deadline - time.monotonic(), 0))
    chat.stop()
    log.info("event=shutdown_done sessions=%d cut_off=%d still_open=%d seconds=%.3f",
             sessions, cut_off, connections.open, time.monotonic() - started)


HTTP_CUTTER = "nane.http_cutter"  # the environ key of a request's deadline greenlet


def cut_when_late(sock: socket.socket, seconds: float, remote: str,
                  on_cut: Callable[[], None] = lambda: None) -> gevent.Greenlet:
    """Shut `sock` down after `seconds` unless killed first: a request's whole-time deadline.

    Shutting the socket down (rather than raising a timeout into the request's
    greenlet) ends any read or write on it as a broken pipe, which every
    server here drops quietly.
    """
    def cut() -> None:
        log.info("event=http_timeout remote=%s seconds=%s", remote, seconds)
        on_cut()
        try:
            # Through a second socket object on the same descriptor: gevent's own
            # shutdown() would wake the blocked greenlet with a "descriptor closed"
            # error that servers log as a crash; this way its write fails as EPIPE.
            twin = socket.socket(fileno=sock.fileno())
        except OSError:
            return  # already closed
        try:
            twin.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            twin.detach()

    return gevent.spawn_later(seconds, cut)


def lift_request_deadline(environ: dict[str, Any]) -> None:
    """The request became a websocket: it may live as long as it likes.

    Under `gunicorn -k gevent` (`bound_http_requests`); in the other modes the
    handler lifts its own deadline (app/server.py).
    """
    cutter = environ.pop(HTTP_CUTTER, None)
    if isinstance(cutter, gevent.Greenlet):
        cutter.kill()


@bp.before_app_request
def bound_http_requests() -> Response | None:
    """Under `gunicorn -k gevent`: what app/server.py's handler does in the other modes.

    Nothing here reads a body, so a big one is refused unread (413) and the
    connection closed; and the request, its answer included, must be done
    within `http_idle_timeout_seconds` (the /ws view lifts that for a websocket).
    """
    nane = door.nane()
    config = nane.config
    sock = request.environ.get("gunicorn.socket")
    if sock is not None and HTTP_CUTTER not in request.environ:
        request.environ[HTTP_CUTTER] = cut_when_late(
            sock, config.http_idle_timeout_seconds, request.remote_addr or "-",
            nane.metrics.http_timeouts.inc)
    if (request.content_length or 0) > config.max_request_body_bytes:
        response = _json(f"request body larger than {config.max_request_body_bytes} bytes", 413)
        response.headers["Connection"] = "close"
        return response
    return None


@bp.after_app_request
def stop_the_deadline_once_answered(response: Response) -> Response:
    cutter = request.environ.get(HTTP_CUTTER)
    if cutter is not None:
        response.call_on_close(cutter.kill)  # after the server has written the answer
    return response


# -- health --------------------------------------------------------------------

def _json(value: object, status: int = 200) -> Response:
    body = encode_result(value) if status < 400 else encode_error(str(value))
    return Response(body, status=status, content_type=JSON)


@bp.route("/healthz", methods=["GET", "HEAD"])
def healthz() -> Response:
    """The process serves HTTP."""
    return _json({"status": "ok"})


@bp.route("/readyz", methods=["GET", "HEAD"])
def readyz() -> Response:
    """The actors answer (and, with Redis, Redis does): ready for traffic."""
    nane = door.nane()
    if nane.connections.stopping:
        return _json("not ready: shutting down", 503)
    checks, failed = nane.chat.ready(timeout=1.0)
    if failed:
        return _json("not ready: " + "; ".join(failed), 503)
    return _json({"status": "ready", "checks": checks})


@bp.route("/metrics", methods=["GET", "HEAD"])
def metrics() -> Response:
    """Prometheus text format (see app/ops/metrics.py for what each series means)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(door.nane().metrics.registry),
                    content_type=CONTENT_TYPE_LATEST)


@bp.route("/debug/stats", methods=["GET"])
def debug_stats() -> Response:
    """Leak hunting (tests, soak runs): counts that cost a heap walk, so off unless `debug`.

    `sessions` and `rooms` are the hub's and the registry's answers to
    `Describe`; `null` when one did not answer within a second.
    """
    nane = door.nane()
    if not nane.config.debug:
        return _json("not found", 404)
    state = nane.chat.core_state(1.0)
    gc.collect()
    greenlets = sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet))
    return _json({"greenlets": greenlets,
                  "connections": nane.connections.open,
                  "sessions": (state.hub or {}).get("sessions"),
                  "rooms": (state.registry or {}).get("rooms"),
                  "rss_bytes": _rss_bytes()})


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            import os
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
