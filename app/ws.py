"""`/ws`: who is connecting, which transport carries the socket, and the read loop.

Each connection is two greenlets: this one reads frames and turns them into
messages for the actors; its `SessionActor` writes frames out. The reader
never writes to the socket except through the session's outbox.
"""

from __future__ import annotations

import itertools
import logging
import time
from urllib.parse import parse_qs

from flask import Blueprint, Response, current_app, g, request
from flask_sock import Sock

from actors.actor import ActorStopped, MailboxFull
from actors.hub import Join, Leave
from actors.message import (PONG, BadFrame, Frame, Limits, Ping, encode_error, error_frame,
                            parse_frame)
from actors.registry import Post
from actors.session import SUPERVISOR as SESSIONS, SessionActor
from app.limits import FloodGuard
from app.metrics import FLOOD
from app.ops import Connections
from app.transport import Binary, GeventWebSocketTransport, SimpleWebSocketTransport

log = logging.getLogger("nane.ws")

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


@bp.before_app_request
def upgrade_or_refuse():
    """Before flask-sock would handshake: refuse nameless clients, or serve an upgraded socket."""
    if request.path != "/ws":
        return None
    config = current_app.config["NANE"]
    query = request.query_string.decode("latin-1")
    g.username = username_from_query(query, config.max_username_length)
    upgraded = request.environ.get("wsgi.websocket")
    if not g.username:
        if upgraded is None:
            return Response("name required", status=401, mimetype="text/plain")
        GeventWebSocketTransport(upgraded, config.max_frame_bytes).close(1008, "name required")
        return Response()
    connections: Connections = current_app.extensions["nane_connections"]
    refusal = connections.acquire(request.environ)
    if refusal is not None:
        full = refusal == Connections.FULL
        current_app.extensions["nane_metrics"].refused.labels(
            "full" if full else "shutting_down").inc()
        log.info("event=ws_refused username=%r reason=%r open=%d", g.username, refusal,
                 connections.open)
        if upgraded is None:  # before the upgrade: a plain HTTP answer
            return Response(encode_error(refusal), status=503, headers={"Retry-After": "5"},
                            content_type="application/json; charset=utf-8")
        GeventWebSocketTransport(upgraded, config.max_frame_bytes).close(
            1013 if full else 1001, refusal)
        return Response()
    if upgraded is not None:
        serve(GeventWebSocketTransport(upgraded, config.max_frame_bytes), g.username, query)
        return Response()
    return None  # flask-sock's route below does the handshake


@bp.teardown_app_request
def give_back_connection_slot(error=None):
    connections = current_app.extensions.get("nane_connections")
    if connections is not None:
        connections.release(request.environ)


@sock.route("/ws", bp=bp)
def websocket(ws):
    serve(SimpleWebSocketTransport(ws), g.username, request.query_string.decode("latin-1"))


def serve(transport, username: str, query: str) -> None:
    """Run one connection until it closes: read frames, post messages, answer pings."""
    chat = current_app.extensions["nane"]
    config = current_app.config["NANE"]
    metrics = current_app.extensions["nane_metrics"]
    received, dropped = metrics.received, metrics.dropped
    limits = Limits(config.max_room_title_length, config.max_message_length)
    extensions = opted_in(query)
    flood = FloodGuard(config.max_messages_per_second, config.max_flood_seconds)
    name = f"session:{next(_session_numbers)}"
    session = SessionActor(name, transport, username, config.max_outbox_messages,
                           config.ping_interval_seconds, config.ping_timeout_seconds,
                           config.max_outbox_bytes).start(SESSIONS)
    chat.hub.tell(Join(session))
    metrics.connections.inc()
    remote = request.remote_addr
    log.info("event=ws_open session=%s username=%r remote=%s v2=%s",
             name, username, remote, extensions)
    cut_off = None
    try:
        while (raw := transport.receive()) is not None:
            received.inc()
            try:
                if not flood.admit(time.monotonic()):
                    if flood.flooding:
                        cut_off = FLOOD
                        log.warning("event=flood session=%s username=%r remote=%s",
                                    name, username, remote)
                        break
                    raise rate_limited(raw, limits, config.max_messages_per_second, extensions)
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
        session.join(timeout=2)
        facts = session.info()
        metrics.disconnected(cut_off or facts["closed_with"], transport.error_code)
        log.info("event=ws_close session=%s username=%r sent=%d", name, username, facts["sent"])


def rate_limited(raw, limits: Limits, per_second: int, extensions: bool) -> BadFrame:
    """The drop of a frame over the rate; parsed only to echo its `id` to a `?v=2` client."""
    id = None
    if extensions and not isinstance(raw, Binary):
        try:
            parsed = parse_frame(raw, limits)
            id = getattr(parsed, "id", None)
        except BadFrame as bad:
            id = bad.id
    return BadFrame(f"too many messages: at most {per_second} per second", id, "rate_limited")


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
