"""The machine-readable contract: one set of JSON Schemas, and the two documents built from it.

`SCHEMAS` describes every JSON shape on the wire (docs/protocol.md). `openapi()` builds
the OpenAPI 3.1 document served at `/api/openapi.json`; `asyncapi()` builds the
AsyncAPI 3.0 document of the websocket protocol, kept in docs/asyncapi.json
(regenerate with `python -m app.api.contract > docs/asyncapi.json`; a test fails
when the file and the code disagree). The tests validate what the server
sends against these same schemas, so the documents cannot drift from the code.
"""

from __future__ import annotations

import json
import sys
from typing import overload

from app.config import Config

CREATED_PATTERN = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$"

_sender = {"type": "object", "required": ["username"], "additionalProperties": False,
           "properties": {"username": {"type": "string", "minLength": 1}}}
_message_properties = {
    "room": {"type": "string", "minLength": 1,
             "description": "The room's first-seen spelling"},
    "created": {"type": "string", "pattern": CREATED_PATTERN,
                "description": "UTC RFC 3339, nine fractional digits, Z; unique and "
                               "increasing: sort by comparing it as a string"},
    "sender": _sender,
    "text": {"type": "string", "minLength": 1},
}

# the original's three keys and uptime, then every limit of app/config.py
_SETTINGS_KEYS = list(dict.fromkeys(["max_message_length", "max_room_title_length",
                                     "max_username_length", "uptime", *Config().limits()]))

SCHEMAS: dict[str, dict] = {
    "Message": {
        "description": "An accepted message, as every connection receives it and /history "
                       "keeps it. `id` only when the sender gave one (never null).",
        "type": "object", "required": ["room", "created", "sender", "text"],
        "additionalProperties": False,
        "properties": {"id": {"type": "string", "minLength": 1}, **_message_properties},
    },
    "LastMessage": {
        "description": "A room's last message: a Message without `id`.",
        "type": "object", "required": ["room", "created", "sender", "text"],
        "additionalProperties": False, "properties": dict(_message_properties),
    },
    "Room": {
        "type": "object", "required": ["name", "last_message"], "additionalProperties": False,
        "properties": {"name": {"type": "string", "minLength": 1},
                       "last_message": {"$ref": "#/components/schemas/LastMessage"}},
    },
    "Settings": {
        "description": "Every limit, and `uptime` in integer nanoseconds since start.",
        "type": "object", "additionalProperties": {"type": "integer"},
        "required": _SETTINGS_KEYS,
        "properties": {key: {"type": "integer", "minimum": 0} for key in _SETTINGS_KEYS},
    },
    "Error": {
        "type": "object", "required": ["error"], "additionalProperties": False,
        "properties": {"error": {"type": "string", "minLength": 1}},
    },
    "ClientMessage": {
        "description": "What a client sends to post. The server trims `room` and `text`, "
                       "cuts them to max_room_title_length / max_message_length characters, "
                       "and drops the message when either is empty. Unknown fields and "
                       "nulls are ignored.",
        "type": "object", "required": ["room", "text"],
        "properties": {"room": {"type": "string"}, "text": {"type": "string"},
                       "id": {"type": ["string", "null"],
                              "description": "Echoed unchanged to every receiver; longer "
                                             "than max_id_length characters (default 128), "
                                             "the message is dropped"}},
    },
    "Ping": {
        "description": "Keep-alive: answered at once with a Pong. A frame whose `ping` is "
                       "true is a ping whatever else it holds, and is never posted.",
        "type": "object", "required": ["ping"], "properties": {"ping": {"const": True}},
    },
    "Pong": {
        "type": "object", "required": ["pong"], "additionalProperties": False,
        "properties": {"pong": {"const": True}},
    },
    "ErrorFrame": {
        "description": "Only to a client that connected with `?v=2`: why its frame was "
                       "dropped, with the frame's `id` when it had one.",
        "type": "object", "required": ["error"], "additionalProperties": False,
        "properties": {"error": {"type": "string", "minLength": 1},
                       "id": {"type": "string", "minLength": 1}},
    },
    "PositionedMessage": {
        "description": "A Message as a `?v=2` connection gets it: the same fields, plus `pos`.",
        "type": "object", "required": ["room", "created", "sender", "text", "pos"],
        "additionalProperties": False,
        "properties": {"id": {"type": "string", "minLength": 1}, **_message_properties,
                       "pos": {"$ref": "#/components/schemas/Position"}},
    },
    "Position": {
        "description": "Where a `?v=2` client is in the one order of messages: `<run>:<offset>`. "
                       "Opaque to clients: keep the last one seen and send it back as `since` "
                       "when reconnecting. `run` names the server run (or the Redis data set), "
                       "so a position from another run is recognised.",
        "type": "string", "minLength": 3, "maxLength": 100, "pattern": "^[^:]+:.+$",
    },
    "Resumed": {
        "description": "Only with `?v=2&since=...`: every message after `since` has been sent "
                       "(`replayed` of them); what follows is live. `pos` is the position now.",
        "type": "object", "required": ["pos", "replayed"], "additionalProperties": False,
        "properties": {"pos": {"$ref": "#/components/schemas/Position"},
                       "replayed": {"type": "integer", "minimum": 0}},
    },
    "Gone": {
        "description": "Only with `?v=2&since=...`, instead of a replay: the server cannot give "
                       "every message after `since` (a room trimmed or forgot them, another "
                       "server run or Redis data set, more than the outbox holds, not a "
                       "position). Reload what you show (e.g. /history); the live stream "
                       "follows, from `pos`.",
        "type": "object", "required": ["gone", "pos"], "additionalProperties": False,
        "properties": {"gone": {"type": "string", "minLength": 1},
                       "pos": {"$ref": "#/components/schemas/Position"}},
    },
    "ControlRequest": {
        "description": "What a fault control acts on, as a JSON body (or the same keys in the "
                       "query string). Only the keys a control needs are read.",
        "type": "object",
        "properties": {
            "actor": {"type": "string", "minLength": 1,
                      "description": "registry, hub, kozma, room:NAME or session:N "
                                     "(as in /api/actors)"},
            "ms": {"type": "integer", "minimum": 0, "maximum": 10000,
                   "description": "slow: added per message; delay: held before fan-out"},
            "how": {"type": "string", "enum": ["1000", "1001", "1011", "drop", "silent"],
                    "description": "disconnect: close with this code, drop the TCP "
                                   "connection with no close frame, or go silent"},
            "seconds": {"type": "integer", "minimum": 1, "maximum": 600,
                        "description": "disconnect how=silent: dropped (no close frame) "
                                       "after this (default 60)"}},
    },
    "ControlResult": {
        "description": "What the control did, and the actor it touched as /api/actors shows it.",
        "type": "object", "required": ["control"],
        "properties": {"control": {"type": "string"}, "actor": {"type": "object"}},
    },
    "Health": {
        "type": "object", "required": ["status"],
        "properties": {"status": {"type": "string"},
                       "checks": {"type": "array", "items": {"type": "string"}}},
    },
}


def _result(schema: dict) -> dict:
    return {"type": "object", "required": ["result"], "additionalProperties": False,
            "properties": {"result": schema}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def resolved(name: str) -> dict:
    """A schema with its `$ref`s resolved against SCHEMAS (for jsonschema in tests)."""
    return _inline(SCHEMAS[name])


@overload
def _inline(schema: dict) -> dict: ...


@overload
def _inline(schema: object) -> object: ...


def _inline(schema: object) -> object:
    """`schema` (or any part of one) with every `$ref` in it replaced by what it names."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inline(SCHEMAS[schema["$ref"].rsplit("/", 1)[1]])
        return {key: _inline(value) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inline(item) for item in schema]
    return schema


def _json_response(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _read(summary: str, ok: dict, not_found: bool = False) -> dict:
    responses = {"200": _json_response("Success", _result(ok)),
                 "503": _json_response("The server is too busy to answer now", _ref("Error"))}
    if not_found:
        responses["404"] = _json_response("No such room: `room {name} not found`",
                                          _ref("Error"))
    operation: dict[str, object] = {"summary": summary, "responses": responses}
    if not_found:
        operation["parameters"] = [{
            "name": "name", "in": "path", "required": True,
            "description": "The room name, percent-encoded UTF-8; any case",
            "schema": {"type": "string", "minLength": 1}, "example": "general"}]
    # the protocol: GET, HEAD and POST all work on reads; clients in the wild use POST
    return {"get": operation, "post": dict(operation)}


def openapi() -> dict:
    """The OpenAPI 3.1 document of the HTTP API."""
    paths = {
        "/api/settings": _read("Limits and uptime", _ref("Settings")),
        "/api/rooms": _read("Rooms, most recently active first",
                            {"type": "array", "items": _ref("Room")}),
        "/api/rooms/{name}": _read("One room", _ref("Room"), not_found=True),
        "/api/rooms/{name}/history": _read("A room's messages, oldest first",
                                           {"type": "array", "items": _ref("Message")},
                                           not_found=True),
    }
    for path, methods in paths.items():
        for method, operation in methods.items():
            base = path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
            operation = dict(operation)
            operation["operationId"] = f"{method}_{base}"
            methods[method] = operation
    paths["/healthz"] = {"get": {"operationId": "healthz", "summary": "The process serves",
                                 "responses": {"200": _json_response(
                                     "Serving", _result(_ref("Health")))}}}
    paths["/readyz"] = {"get": {
        "operationId": "readyz", "summary": "The actors answer (and Redis, when configured)",
        "responses": {"200": _json_response("Ready", _result(_ref("Health"))),
                      "503": _json_response("Not ready, or shutting down", _ref("Error"))}}}
    paths["/metrics"] = {"get": {
        "operationId": "metrics", "summary": "Prometheus metrics (text exposition format)",
        "responses": {"200": {"description": "Metrics",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}}}}
    paths.update(_control_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "nane", "version": "1",
                 "description": "A public chat server with no accounts. Every answer is JSON "
                                "(`application/json; charset=utf-8`) in the envelope "
                                "`{\"result\": ...}` or `{\"error\": \"...\"}`; CORS `*`. "
                                "The websocket protocol is in docs/asyncapi.json."},
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }


_CONTROLS = {
    "crash": "Crash an actor's run: its supervisor restarts it with state and mailbox intact",
    "crash-until-give-up": "Crash a room until its supervisor gives up: the registry forgets "
                           "it, and its next message makes a fresh one",
    "slow": "Every message the actor handles waits `ms` more (0 ends it)",
    "pause": "The actor handles no more mail; it piles up",
    "resume": "A paused actor drains its mail, in order",
    "disconnect": "Close a session (1000, 1001, 1011), drop its TCP connection with no close "
                  "frame, or make it go silent",
    "forget": "Forget every room and its history, restart uptime, close every connection "
              "with 1001: what clients see after a restart",
    "delay": "The hub holds every message `ms` before its fan-out (0 ends it)",
}


def _control_paths() -> dict:
    """The fault controls (app/ops/controls.py): 404 unless started with --controls."""
    def responses(ok: dict) -> dict:
        return {"200": _json_response("Done", _result(ok)),
                "400": _json_response("A parameter is missing or out of range", _ref("Error")),
                "403": _json_response("Controls on, but no or a wrong token", _ref("Error")),
                "404": _json_response("Controls off (as for any unknown path), or no such "
                                      "actor", _ref("Error")),
                "409": _json_response("Not for this actor, or not in this setup",
                                      _ref("Error")),
                "503": _json_response("The registry or the hub did not answer in time",
                                      _ref("Error"))}

    # Not an OpenAPI `security` requirement: with controls off (the default) even a request
    # without the token must answer 404, as for any path that does not exist.
    access = ("404 unless the server was started with --controls; then 403 without the header "
              "`Authorization: Bearer <token>` (the token printed at start, or "
              "NANE_CONTROLS_TOKEN).")
    paths = {"/api/controls": {method: {
        "operationId": f"{method}_api_controls", "summary": "Which fault controls exist",
        "description": access, "responses": responses({"type": "object"})}
        for method in ("get", "post")}}
    for name, summary in _CONTROLS.items():
        paths[f"/api/controls/{name}"] = {"post": {
            "operationId": "control_" + name.replace("-", "_"), "summary": summary,
            "description": access,
            "requestBody": {"required": False, "content": {
                "application/json": {"schema": _ref("ControlRequest")}}},
            "responses": responses(_ref("ControlResult"))}}
    return paths


def asyncapi() -> dict:
    """The AsyncAPI 3.0 document of the websocket protocol at `/ws`."""
    def message(name: str, schema: str, summary: str) -> dict:
        return {"name": name, "summary": summary, "contentType": "application/json",
                "payload": _ref(schema)}

    messages = {
        "clientMessage": message("clientMessage", "ClientMessage", "Post a message"),
        "ping": message("ping", "Ping", "Application-level keep-alive"),
        "message": message("message", "Message",
                           "An accepted message; every connection gets every one, "
                           "the sender's own included"),
        "pong": message("pong", "Pong", "The answer to a ping"),
        "errorFrame": message("errorFrame", "ErrorFrame",
                              "Why a frame was dropped (only with ?v=2)"),
        "positionedMessage": message("positionedMessage", "PositionedMessage",
                                     "An accepted message with its position (only with ?v=2)"),
        "resumed": message("resumed", "Resumed",
                           "The seam between the replay and the live stream "
                           "(only with ?v=2&since)"),
        "gone": message("gone", "Gone",
                        "The position cannot be resumed from (only with ?v=2&since)"),
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "nane websocket protocol", "version": "1",
            "description": (
                "Connect to /ws?username=NAME (form-decoded and trimmed; `name` is the legacy "
                "fallback; none at all: HTTP 401 before the upgrade). JSON text frames both "
                "ways. Close codes: 1001 server shutting down; 1007 invalid UTF-8; 1008 name "
                "required, slow consumer (outbox full) or too many messages (a flood); 1009 "
                "message larger than max_frame_bytes; 1011 ping timeout (the client did not "
                "answer a protocol ping within ping_timeout_seconds); 1013 server full (only "
                "where the run mode upgrades before the app can answer 503), or too busy to "
                "take a resume (`since`): try again later."),
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "127.0.0.1:8022", "protocol": "ws"}},
        "channels": {
            "chat": {
                "address": "/ws",
                "messages": messages,
                "bindings": {"ws": {"method": "GET", "query": {
                    "type": "object",
                    "properties": {
                        "username": {"type": "string", "description": "Who is connecting"},
                        "name": {"type": "string", "description": "Legacy fallback"},
                        "v": {"type": "string", "enum": ["2"],
                              "description": "2: messages carry their position (`pos`), "
                                             "and ErrorFrames are sent"},
                        "since": {"type": "string",
                                  "description": "With v=2: a position to resume from. "
                                                 "Every message after it, in order, then "
                                                 "Resumed, then the live stream; or Gone. "
                                                 "Empty: only Resumed with the position "
                                                 "now."}}}}},
            },
        },
        "operations": {
            "post": {"action": "receive", "channel": {"$ref": "#/channels/chat"},
                     "summary": "The server receives client messages and pings",
                     "messages": [{"$ref": "#/channels/chat/messages/clientMessage"},
                                  {"$ref": "#/channels/chat/messages/ping"}]},
            "deliver": {"action": "send", "channel": {"$ref": "#/channels/chat"},
                        "summary": "The server sends messages, pongs and (with ?v=2) errors, "
                                   "positions, and the answer to `since`",
                        "messages": [{"$ref": "#/channels/chat/messages/message"},
                                     {"$ref": "#/channels/chat/messages/pong"},
                                     {"$ref": "#/channels/chat/messages/errorFrame"},
                                     {"$ref": "#/channels/chat/messages/positionedMessage"},
                                     {"$ref": "#/channels/chat/messages/resumed"},
                                     {"$ref": "#/channels/chat/messages/gone"}]},
        },
        "components": {"schemas": SCHEMAS},
    }


def render(document: dict) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(asyncapi() if sys.argv[1:] != ["openapi"] else openapi()))
