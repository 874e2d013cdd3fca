"""`/ws`, top to bottom: who connects, which library answers the handshake, then the chat.

Every refusal is an HTTP answer before the upgrade (SPEC): a malformed
handshake 4xx, a nameless client 401, a full server 503 (one address's share
429) and a stopping one 503. Then the handshake is answered and the socket handed
over: by gevent-websocket's handler under `python -m app` and gunicorn's
GeventWebSocketWorker (app/websocket/gevent_websocket_shim.py), by our own 101
on gunicorn's socket under `gunicorn -k gevent` (app/websocket/handshake.py). From then
on app/websocket/transport.py alone reads and writes it, and this greenlet
becomes the connection's reader: `Chat.connect` (actors/chat/connection.py)
decides what each frame means until the client is gone.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any, NamedTuple

from flask import Blueprint, Response, request

from actors import logfmt
from actors.chat.message import encode_error
from app import door
from app.config import Config
from app.ops.service import Connections, lift_request_deadline
from app.target import query_values
from app.websocket import ClientGone, Upgraded, gevent_websocket_shim, handshake
from app.websocket.transport import WebSocketTransport

log = logging.getLogger("nane.ws")

bp = Blueprint("ws", __name__)


@bp.route("/ws", websocket=True)
@bp.route("/ws", endpoint="not_websocket")  # werkzeug routes other requests apart; refused below
def websocket() -> Response:
    """One connection from its handshake to its end."""
    nane = door.nane()
    config, connections = nane.config, nane.connections
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
        v2 = query.get("v") == "2"  # `?v=2` asks for extension frames (errors for dropped messages)
        address = connections.address_of(environ)
        with upgraded.rfile:
            nane.chat.connect(make_transport(upgraded, config), username, address, v2=v2,
                              since=since_from_query(query), share=connections.share_of(address),
                              observer=nane.metrics, stopping=connections.is_stopping)
        return upgraded.answer()
    finally:
        connections.release(environ)


class Refusal(NamedTuple):
    """Why a client is not served: an HTTP answer, or a close frame on a socket upgraded already."""

    status: int
    reason: str
    close_code: int
    headers: tuple[tuple[str, str], ...] = ()
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


def refusal_of(environ: dict[str, Any], username: str, upgraded: bool) -> Refusal | None:
    """Why this client is not served, in SPEC's order; None when it is, holding a connection slot."""
    if not upgraded and (bad := handshake_refusal(environ)) is not None:
        log.info("event=ws_bad_handshake status=%d reason=%s", bad.status, logfmt.value(bad.reason))
        return bad
    if not username:
        return NAMELESS
    if not upgraded and not is_upgrade(environ):
        return NOT_WEBSOCKET
    nane = door.nane()
    connections = nane.connections
    why = connections.acquire(environ)
    if why is None:
        return None
    label, status, code = SLOT_REFUSALS[why]
    nane.metrics.refused.labels(label).inc()
    log.info("event=ws_refused username=%s reason=%s open=%d", logfmt.value(username),
             logfmt.value(why), connections.open)
    return Refusal(status, why, code, (("Retry-After", "5"),), json=True)


def is_upgrade(environ: dict[str, Any]) -> bool:
    return environ.get("HTTP_UPGRADE", "").lower() == "websocket"


def handshake_refusal(environ: dict[str, Any]) -> Refusal | None:
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


def make_transport(upgraded: Upgraded, config: Config) -> WebSocketTransport:
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


def since_from_query(query: dict[str, str]) -> str | None:
    """`?v=2&since=<position>`: where to resume from ("" for just the current position)."""
    since = query.get("since")
    return since.strip() if since is not None else None
