"""`/ws`: who is connecting, which transport carries the socket, and the read loop.

Each connection is one greenlet, this one, that reads frames and turns them into
messages for the actors; its `SessionActor` writes frames out (on a dispatcher
worker, only while it has frames to write). The reader writes nothing but
pongs, and those through the transport's one write lock.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import logging
import time
from urllib.parse import parse_qs

from flask import Blueprint, Response, current_app, g, request
from flask_sock import Sock
from gevent.event import AsyncResult

from actors.runtime.actor import ActorStopped, MailboxFull
from actors.chat.hub import Join, Leave
from actors.chat.message import (PONG, BadFrame, Frame, Limits, Ping, encode_error, error_frame,
                            parse_frame)
from actors.chat.registry import Post
from actors.chat.resume import Resume
from actors.chat.session import SUPERVISOR as SESSIONS, Disconnect, SessionActor
from app.ops.limits import FloodGuard
from app.ops.metrics import FLOOD
from app.ops.service import Connections
from app.websocket import simple_ws
from app.websocket.transport import Binary, WebSocketTransport

log = logging.getLogger("nane.ws")

TRY_LATER = Disconnect(1013, "server busy, try again later")

bp = Blueprint("ws", __name__)
sock = Sock()
_session_numbers = itertools.count(1)
# A post that finds the registry's mailbox full waits this long for room: the reader stops
# reading meanwhile, so TCP slows that one client instead of its messages being dropped.
POST_WAIT_SECONDS = 5.0


def username_from_query(query: str, max_length: int) -> str:
    """SPEC: form-decoded, trimmed, `name` when `username` is missing or blank, then cut."""
    params = parse_qs(query, keep_blank_values=True)
    for key in ("username", "name"):
        value = (params.get(key) or [""])[0].strip()
        if value:
            return value[:max_length]
    return ""


def opted_in(query: str) -> bool:
    """`?v=2` asks for extension frames (errors for dropped messages)."""
    return (parse_qs(query).get("v") or [""])[0] == "2"


def handshake_refusal(environ: dict) -> tuple[str, str, list] | None:
    """Why an upgrade request cannot be accepted: (status, reason, headers), or None.

    Every run mode asks this before its library does the handshake, so a
    malformed one gets a 4xx with a short reason, never a library's 500.
    """
    if environ.get("HTTP_UPGRADE", "").lower() != "websocket":
        return None  # not an upgrade: the route answers it
    version = environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip()
    if version != "13":
        return ("426 Upgrade Required", f"unsupported websocket version {version[:20]!r}; use 13",
                [("Sec-WebSocket-Version", "13")])
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except (ValueError, binascii.Error):
        valid_key = False
    if not valid_key:
        return "400 Bad Request", "Sec-WebSocket-Key must be 16 bytes in base64", []
    protocols = environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "")
    if not protocols.isascii() or not protocols.replace(",", "").replace(" ", "").isprintable():
        return "400 Bad Request", "Sec-WebSocket-Protocol must be ASCII tokens", []
    return None


def refused_handshake(refusal: tuple[str, str, list]) -> Response:
    status, reason, headers = refusal
    log.info("event=ws_bad_handshake status=%s reason=%r", status[:3], reason)
    return Response(reason, status=int(status[:3]), headers=headers, mimetype="text/plain")


def make_transport(sock_, rfile, config) -> WebSocketTransport:
    return WebSocketTransport(sock_, rfile, config.max_frame_bytes,
                              max_fragments=config.max_fragments_per_message,
                              write_timeout=config.write_timeout_seconds)


def taken_from_gevent_websocket(websocket, config) -> WebSocketTransport:
    """The socket gevent-websocket upgraded, read and written by us alone from now on."""
    websocket.closed = True  # its own close() would be a second writer
    return make_transport(websocket.handler.socket, websocket.handler.rfile, config)


def since_from_query(query: str) -> str | None:
    """`?v=2&since=<position>`: where to resume from ("" for just the current position)."""
    values = parse_qs(query, keep_blank_values=True).get("since")
    return values[0].strip() if values else None


@bp.before_app_request
def upgrade_or_refuse():
    """Before flask-sock would handshake: refuse nameless clients, or serve an upgraded socket."""
    if request.path != "/ws":
        return None
    config = current_app.config["NANE"]
    query = request.query_string.decode("latin-1")
    g.username = username_from_query(query, config.max_username_length)
    upgraded = request.environ.get("wsgi.websocket")
    if upgraded is None and (refusal := handshake_refusal(request.environ)):
        return refused_handshake(refusal)
    if not g.username:
        if upgraded is None:
            return Response("name required", status=401, mimetype="text/plain")
        taken_from_gevent_websocket(upgraded, config).close(1008, "name required")
        return Response()
    connections: Connections = current_app.extensions["nane_connections"]
    refusal = connections.acquire(request.environ)
    if refusal is not None:
        reason, status, code = {Connections.FULL: ("full", 503, 1013),
                                Connections.ADDRESS_FULL: ("address_full", 429, 1008)}.get(
            refusal, ("shutting_down", 503, 1001))
        current_app.extensions["nane_metrics"].refused.labels(reason).inc()
        log.info("event=ws_refused username=%r reason=%r open=%d", g.username, refusal,
                 connections.open)
        if upgraded is None:  # before the upgrade: a plain HTTP answer
            return Response(encode_error(refusal), status=status, headers={"Retry-After": "5"},
                            content_type="application/json; charset=utf-8")
        taken_from_gevent_websocket(upgraded, config).close(code, refusal)
        return Response()
    if upgraded is not None:
        serve(taken_from_gevent_websocket(upgraded, config), g.username, query)
        return Response()
    simple_ws.before_handshake(request.environ)
    return None  # flask-sock's route below does the handshake


@bp.teardown_app_request
def give_back_connection_slot(error=None):
    connections = current_app.extensions.get("nane_connections")
    if connections is not None:
        connections.release(request.environ)


@sock.route("/ws", bp=bp)
def websocket(ws):
    sock_, rfile = simple_ws.take_over(ws)
    try:
        serve(make_transport(sock_, rfile, current_app.config["NANE"]), g.username,
              request.query_string.decode("latin-1"))
    finally:
        rfile.close()


def serve(transport: WebSocketTransport, username: str, query: str) -> None:
    """Run one connection until it closes: read frames, post messages, answer pings."""
    chat = current_app.extensions["nane"]
    config = current_app.config["NANE"]
    metrics = current_app.extensions["nane_metrics"]
    connections: Connections = current_app.extensions["nane_connections"]
    received, dropped = metrics.received, metrics.dropped
    limits = Limits(config.max_room_title_length, config.max_message_length,
                    config.max_id_length)
    extensions = opted_in(query)
    flood = FloodGuard(config.max_messages_per_second, config.max_flood_seconds)
    remote = connections.address_of(request.environ)
    shared = connections.addresses.budget(remote)

    def admit_control() -> bool:
        """Pings and pongs spend the connection's rate like messages do."""
        if flood.admit(time.monotonic()):
            return True
        if flood.flooding:
            log.warning("event=flood session=%s username=%r remote=%s frames=control",
                        name, username, remote)
            transport.refuse(FLOOD.code, FLOOD.reason)
        return False

    transport.admit_control = admit_control
    name = f"session:{next(_session_numbers)}"
    ended = AsyncResult()  # the session's own report of how it ended (SessionEnded)
    session = SessionActor(name, transport, username, config.max_outbox_messages,
                           config.ping_interval_seconds, config.ping_timeout_seconds,
                           config.max_outbox_bytes, positions=extensions,
                           ended=ended).start(SESSIONS)
    since = since_from_query(query) if extensions else None
    if since is None:
        chat.hub.tell(Join(session))
    else:  # the sequencer replays, then joins the session to the hub (actors/chat/resume.py)
        try:
            chat.registry.tell(Resume(session, since, config.max_outbox_messages - 1))
        except (MailboxFull, ActorStopped):
            session.stop(TRY_LATER)
    metrics.connections.inc()
    log.info("event=ws_open session=%s username=%r remote=%s v2=%s",
             name, username, remote, extensions)
    cut_off = None
    try:
        while (raw := transport.receive()) is not None:
            received.inc()
            try:
                now = time.monotonic()
                if not flood.admit(now):
                    if flood.flooding:
                        cut_off = FLOOD
                        log.warning("event=flood session=%s username=%r remote=%s",
                                    name, username, remote)
                        break
                    raise rate_limited(raw, limits, config.max_messages_per_second, extensions)
                if not shared.admit(now):
                    raise rate_limited(raw, limits, shared.per_second, extensions,
                                       "too many messages from your address")
                reply = handle_frame(raw, username, limits, chat,
                                     reply_to=session if extensions else None)
            except BadFrame as bad:
                dropped.labels(bad.kind).inc()
                if bad.kind != "rate_limited":  # a flood would write a line per frame
                    log.info("event=dropped session=%s reason=%r", name, bad.reason)
                reply = error_frame(bad) if extensions else None
            if reply is not None:
                try:
                    session.tell(reply)
                except (MailboxFull, ActorStopped):
                    break
    finally:
        chat.hub.tell(Leave(session))
        session.stop(cut_off or "stopped")
        end = ended.wait(timeout=2)  # None: not stopped yet (a paused session stops later)
        metrics.disconnected(cut_off or (end and end.closed_with), transport.error_code)
        log.info("event=ws_close session=%s username=%r sent=%s", name, username,
                 end.sent if end else "unknown")


def rate_limited(raw, limits: Limits, per_second: int, extensions: bool,
                 what: str = "too many messages") -> BadFrame:
    """The drop of a frame over the rate; parsed only to echo its `id` to a `?v=2` client."""
    id = None
    if extensions and not isinstance(raw, Binary):
        try:
            parsed = parse_frame(raw, limits)
            id = getattr(parsed, "id", None)
        except BadFrame as bad:
            id = bad.id
    return BadFrame(f"{what}: at most {per_second} per second", id, "rate_limited")


def handle_frame(raw: str | Binary, username: str, limits: Limits, chat,
                 reply_to=None) -> Frame | None:
    """One client frame in; the frame to answer with (a pong), if any.

    `reply_to` is the session of a client that opted in to error frames: it
    hears about a message that could not be delivered after it was accepted.

    Raises:
        BadFrame: the message is dropped, for the reason it carries.
    """
    if isinstance(raw, Binary):
        raise BadFrame("binary frames are not supported; send JSON text", kind="binary")
    parsed = parse_frame(raw, limits)
    if isinstance(parsed, Ping):
        return PONG
    try:
        chat.registry.tell(Post(parsed, username, reply_to), wait=POST_WAIT_SECONDS)
    except (MailboxFull, ActorStopped):
        raise BadFrame("server busy, message not accepted", parsed.id, "busy") from None
    return None
