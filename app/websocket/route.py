"""`/ws`, top to bottom: who connects, which library answers the handshake, the read loop.

Every refusal is an HTTP answer before the upgrade (SPEC): a malformed
handshake 4xx, a nameless client 401, a full server 503 (one address's share
429) and a stopping one 503. Then one library answers the handshake and hands
over the socket: gevent-websocket's handler under `python -m app` and gunicorn's
GeventWebSocketWorker (app/websocket/gevent_websocket_shim.py), simple-websocket
under `gunicorn -k gevent` (app/websocket/simple_websocket_shim.py). From then
on app/websocket/transport.py alone reads and writes it.

Each connection is one greenlet, this one, that reads frames and turns them into
messages for the actors; its `SessionActor` writes frames out (on a dispatcher
worker, only while it has frames to write). The reader writes pongs and close
frames, through the transport's one write lock like every other write.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import logging
import time
from typing import NamedTuple

from flask import Blueprint, Response, current_app, request
from gevent.event import AsyncResult

from actors import logfmt
from actors.chat.hub import Join, Leave
from actors.chat.message import PONG, BadFrame, Frame, Limits, Ping, encode_error, error_frame, parse_frame
from actors.chat.registry import Post
from actors.chat.resume import RATE_LIMITED, Resume
from actors.chat.session import SUPERVISOR as SESSIONS
from actors.chat.session import Disconnect, SessionActor
from actors.runtime.actor import ActorStopped, MailboxFull
from app.ops.limits import FloodGuard
from app.ops.metrics import FLOOD
from app.ops.service import Connections, lift_request_deadline
from app.target import query_values
from app.websocket import ClientGone, Upgraded, gevent_websocket_shim, handshake
from app.websocket.transport import Binary, WebSocketTransport

log = logging.getLogger("nane.ws")

TRY_LATER = Disconnect(1013, "server busy, try again later")

bp = Blueprint("ws", __name__)
_session_numbers = itertools.count(1)
# A post that finds the registry's mailbox full waits this long for room: the reader stops
# reading meanwhile, so TCP slows that one client instead of its messages being dropped.
POST_WAIT_SECONDS = 5.0


@bp.route("/ws", websocket=True)
@bp.route("/ws", endpoint="not_websocket")  # werkzeug routes other requests apart; refused below
def websocket():
    """One connection from its handshake to its end."""
    config = current_app.config["NANE"]
    environ = request.environ
    query = query_values(request.query_string)  # raw UTF-8 bytes too (app/target.py)
    username = username_from_query(query, config.max_username_length)
    upgraded = gevent_websocket_shim.upgraded_already(environ)
    refusal = refusal_of(environ, username, upgraded is not None)
    if refusal is not None:
        if upgraded is None:
            return refusal.response()
        # a stock GeventWebSocketWorker upgraded before asking: the refusal goes as a close frame
        make_transport(upgraded, config).close(refusal.close_code, refusal.reason)
        return upgraded.answer()
    connections: Connections = current_app.extensions["nane_connections"]
    try:  # from here on this request holds a connection slot
        if upgraded is None:
            try:
                upgraded = (gevent_websocket_shim.accept(environ)
                            if gevent_websocket_shim.serves(environ)
                            else handshake.accept(environ))
            except ClientGone as gone:  # a peer that leaves is no error: one line, no traceback
                log.info("event=ws_gone stage=handshake username=%s remote=%s",
                         logfmt.value(username), connections.address_of(environ))
                return gone.answer()
        if upgraded is None:
            return Refusal(400, "websocket handshake refused", 1002).response()
        lift_request_deadline(environ)  # a websocket lives as long as it likes (-k gevent's hook)
        with upgraded.rfile:
            serve(make_transport(upgraded, config), username, query)
        return upgraded.answer()
    finally:
        connections.release(environ)


class Refusal(NamedTuple):
    """Why a client is not served: an HTTP answer, or a close frame on a socket upgraded already."""

    status: int
    reason: str
    close_code: int
    headers: tuple = ()
    json: bool = False

    def response(self) -> Response:
        if self.json:
            return Response(encode_error(self.reason), status=self.status,
                            headers=list(self.headers), content_type="application/json; charset=utf-8")
        return Response(self.reason, status=self.status, headers=list(self.headers),
                        mimetype="text/plain")


NAMELESS = Refusal(401, "name required", 1008)
NOT_WEBSOCKET = Refusal(400, "not a websocket handshake", 1002)
SLOT_REFUSALS = {  # Connections.acquire's answer: metric label, HTTP status, close code
    Connections.FULL: ("full", 503, 1013),
    Connections.ADDRESS_FULL: ("address_full", 429, 1008),
    Connections.STOPPING: ("shutting_down", 503, 1001),
}


def refusal_of(environ: dict, username: str, upgraded: bool) -> Refusal | None:
    """Why this client is not served, in SPEC's order; None when it is, holding a connection slot."""
    if not upgraded and (bad := handshake_refusal(environ)) is not None:
        log.info("event=ws_bad_handshake status=%d reason=%s", bad.status, logfmt.value(bad.reason))
        return bad
    if not username:
        return NAMELESS
    if not upgraded and not is_upgrade(environ):
        return NOT_WEBSOCKET
    connections: Connections = current_app.extensions["nane_connections"]
    why = connections.acquire(environ)
    if why is None:
        return None
    label, status, code = SLOT_REFUSALS[why]
    current_app.extensions["nane_metrics"].refused.labels(label).inc()
    log.info("event=ws_refused username=%s reason=%s open=%d", logfmt.value(username),
             logfmt.value(why), connections.open)
    return Refusal(status, why, code, (("Retry-After", "5"),), json=True)


def is_upgrade(environ: dict) -> bool:
    return environ.get("HTTP_UPGRADE", "").lower() == "websocket"


def handshake_refusal(environ: dict) -> Refusal | None:
    """Why an upgrade request is malformed, or None (a request that is no upgrade at all passes).

    Asked before any library answers the handshake, so a malformed one gets a
    4xx with a short reason, never a library's 500.
    """
    if not is_upgrade(environ):
        return None
    if environ.get("REQUEST_METHOD") != "GET" or environ.get("SERVER_PROTOCOL") != "HTTP/1.1":
        return Refusal(400, "a websocket handshake is an HTTP/1.1 GET", 1002)
    if "upgrade" not in (token.strip() for token in
                         environ.get("HTTP_CONNECTION", "").lower().split(",")):
        return Refusal(400, "Connection must include upgrade", 1002)
    version = environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip()
    if version != "13":
        return Refusal(426, f"unsupported websocket version {version[:20]!r}; use 13", 1002,
                       (("Sec-WebSocket-Version", "13"),))
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except (ValueError, binascii.Error):
        valid_key = False
    if not valid_key:
        return Refusal(400, "Sec-WebSocket-Key must be 16 bytes in base64", 1002)
    protocols = environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "")
    if not protocols.isascii() or not protocols.replace(",", "").replace(" ", "").isprintable():
        return Refusal(400, "Sec-WebSocket-Protocol must be ASCII tokens", 1002)
    return None


def make_transport(upgraded: Upgraded, config) -> WebSocketTransport:
    return WebSocketTransport(upgraded.socket, upgraded.rfile, config.max_frame_bytes,
                              max_fragments=config.max_fragments_per_message,
                              write_timeout=config.write_timeout_seconds)


def username_from_query(query: dict[str, str], max_length: int) -> str:
    """SPEC: form-decoded, trimmed, `name` when `username` is missing or blank, then cut."""
    for key in ("username", "name"):
        value = query.get(key, "").strip()
        if value:
            return value[:max_length]
    return ""


def opted_in(query: dict[str, str]) -> bool:
    """`?v=2` asks for extension frames (errors for dropped messages)."""
    return query.get("v") == "2"


def since_from_query(query: dict[str, str]) -> str | None:
    """`?v=2&since=<position>`: where to resume from ("" for just the current position)."""
    since = query.get("since")
    return since.strip() if since is not None else None


def serve(transport: WebSocketTransport, username: str, query: dict[str, str]) -> None:
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
            log.warning("event=flood session=%s username=%s remote=%s frames=control",
                        name, logfmt.value(username), remote)
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
    else:  # the hub replays, then joins the session (actors/chat/resume.py)
        refused = None
        if since and not connections.addresses.resumes(remote).admit(time.monotonic()):
            refused = RATE_LIMITED
        try:
            chat.hub.tell(Resume(session, since, config.max_outbox_messages - 1,
                                 config.max_outbox_bytes, refused))
        except ActorStopped:
            session.stop(TRY_LATER)
    metrics.connections.inc()
    log.info("event=ws_open session=%s username=%s remote=%s v2=%s",
             name, logfmt.value(username), remote, extensions)
    cut_off = None
    try:
        while (raw := transport.receive()) is not None:
            received.inc()
            try:
                # Both budgets are charged before a frame is parsed, by its length (what
                # parsing it costs: limits.cost_of); a dropped frame is never parsed.
                now, size = time.monotonic(), len(raw)
                refused_by, what = None, "too many messages"
                if not flood.admit(now, size):
                    refused_by = flood
                elif not shared.admit(now, size):
                    flood.dropped(now)  # the address's flood is this connection's too
                    refused_by, what = shared, "too many messages from your address"
                if refused_by is not None:
                    if flood.flooding:
                        cut_off = FLOOD
                        log.warning("event=flood session=%s username=%s remote=%s",
                                    name, logfmt.value(username), remote)
                        break
                    raise rate_limited(raw, limits, refused_by, extensions, what)
                reply = handle_frame(raw, username, limits, chat,
                                     reply_to=session if extensions else None, address=remote,
                                     stopping=connections.stopping)
            except BadFrame as bad:
                dropped.labels(bad.kind).inc()
                if bad.kind != "rate_limited":  # a flood would write a line per frame
                    log.info("event=dropped session=%s reason=%s", name, logfmt.value(bad.reason))
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
        log.info("event=ws_close session=%s username=%s sent=%s", name, logfmt.value(username),
                 end.sent if end else "unknown")


# A rate-limited frame is read for its `id` only when it is this short (a chat message of a
# line or two with its id): parsing it costs a few microseconds, where a frame of the
# largest size can cost milliseconds, and paying that for every dropped frame was the
# flood the budget is there to stop.
ID_OF_DROPPED_FRAMES_UP_TO = 1024


def rate_limited(raw, limits: Limits, guard: FloodGuard, extensions: bool,
                 what: str = "too many messages") -> BadFrame:
    """The drop of a frame over `guard`'s rate, parsed at most if it is short, to echo its `id`."""
    id = None
    if extensions and not isinstance(raw, Binary) and len(raw) <= ID_OF_DROPPED_FRAMES_UP_TO:
        try:
            parsed = parse_frame(raw, limits)
            id = getattr(parsed, "id", None)
        except BadFrame as bad:
            id = bad.id
    return BadFrame(f"{what}: at most {guard.per_second} per second", id, "rate_limited")


def handle_frame(raw: str | Binary, username: str, limits: Limits, chat,
                 reply_to=None, address: str = "", stopping: bool = False) -> Frame | None:
    """One client frame in; the frame to answer with (a pong), if any.

    `reply_to` is the session of a client that opted in to error frames: it
    hears about a message that could not be delivered after it was accepted.
    Once the server is `stopping` no message is accepted (the last accepted
    ones are delivered before every session closes: app/ops/service.py).

    Raises:
        BadFrame: the message is dropped, for the reason it carries.
    """
    if isinstance(raw, Binary):
        raise BadFrame("binary frames are not supported; send JSON text", kind="binary")
    parsed = parse_frame(raw, limits)
    if isinstance(parsed, Ping):
        return PONG
    if stopping:
        raise BadFrame("server shutting down, message not accepted", parsed.id, "busy")
    try:
        chat.registry.tell(Post(parsed, username, reply_to, address), wait=POST_WAIT_SECONDS)
    except (MailboxFull, ActorStopped):
        raise BadFrame("server busy, message not accepted", parsed.id, "busy") from None
    return None
