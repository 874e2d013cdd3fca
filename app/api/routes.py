"""The HTTP API of docs/protocol.md: settings, rooms, one room, a room's history.

Every answer is JSON in the `{"result": ...}` / `{"error": ...}` envelope with
`charset=utf-8` and CORS `*`. The bodies come from the actors already encoded;
this layer only asks and wraps.
"""

from __future__ import annotations

import json
import time

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException

from actors.chat.message import encode_error, encode_result
from actors.system import ActorError
from app import door
from app.api import contract
from app.target import text

JSON = "application/json; charset=utf-8"
READ_METHODS = ["GET", "HEAD", "POST"]

bp = Blueprint("api", __name__, url_prefix="/api")


def json_response(body: bytes, status: int = 200) -> Response:
    return Response(body, status=status, content_type=JSON)


def error_response(text: str, status: int) -> Response:
    return json_response(encode_error(text), status)


@bp.route("/settings", methods=READ_METHODS)
def settings() -> Response:
    config = door.nane().config
    started = current_app.config["NANE_STARTED_NS"]
    body = {"max_message_length": config.max_message_length,
            "max_room_title_length": config.max_room_title_length,
            "max_username_length": config.max_username_length,
            **config.limits(),
            "uptime": time.monotonic_ns() - started}
    return json_response(encode_result(body))


@bp.route("/openapi.json", methods=READ_METHODS)
def openapi_document() -> Response:
    """The OpenAPI 3.1 document of this API (app/api/contract.py)."""
    global _openapi_body
    if _openapi_body is None:
        _openapi_body = json.dumps(contract.openapi(), ensure_ascii=False).encode()
    return json_response(_openapi_body)


_openapi_body: bytes | None = None


@bp.route("/rooms", methods=READ_METHODS)
def rooms() -> Response:
    return json_response(door.chat().rooms())


@bp.route("/rooms/<path:name>", methods=READ_METHODS)
def room(name: str) -> Response:
    # werkzeug decodes the path as UTF-8 too, but merges some bytes that are not UTF-8 into one
    # U+FFFD where the original gives one per byte (app/target.py)
    name = text(request.environ["PATH_INFO"]).removeprefix(f"{bp.url_prefix}/rooms/")
    if name.endswith("/history"):
        return history(name.removesuffix("/history"))
    found = door.chat().room(name)
    if found is None:
        return error_response(f"room {name} not found", 404)
    return json_response(found)


def history(name: str) -> Response:
    found = door.chat().history(name)
    if found is None:
        return error_response(f"room {name} not found", 404)
    return json_response(found)


def add_cors(response: Response) -> Response:
    """Browser clients on other origins call the API directly (docs/protocol.md, Part 3, item 5)."""
    if request.path.startswith("/api/"):
        response.headers["Access-Control-Allow-Origin"] = "*"
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "GET, HEAD, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = (
                request.headers.get("Access-Control-Request-Headers") or "*")
            response.headers["Access-Control-Max-Age"] = "86400"
    return response


def api_error(error: HTTPException) -> HTTPException | Response:
    """404 and 405 under /api/ answer the JSON envelope too."""
    if not request.path.startswith("/api/"):
        return error
    code = error.code or 500
    response = error_response(error.description or "" if code != 404 else
                              f"no such endpoint: {request.path}", code)
    valid_methods = getattr(error, "valid_methods", None)
    if valid_methods:  # RFC 9110: a 405 names the allowed methods
        response.headers["Allow"] = ", ".join(valid_methods)
    return response


def storage_unavailable(error: Exception) -> Response:
    """Rooms shared through Redis cannot be read now: Redis is unreachable, or refused the command."""
    response = error_response(str(getattr(error, "reason", error)), 503)
    response.headers["Retry-After"] = "1"
    return response


def actor_unavailable(error: ActorError) -> Response:
    """An actor did not answer (stopped, its mailbox full, too slow): busy, not broken."""
    return error_response("server busy, try again", 503)
