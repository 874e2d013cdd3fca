"""The actor view: `/actors` (the page) and `/api/actors` (what it polls).

Every actor of the chat with the runtime's counters (`ActorRef.stats`), and,
while somebody is looking, the last messages each one handled. Looking is
what switches tracing on: each call of `/api/actors` keeps it on for
`TRACE_SECONDS` more, so with the page closed the actors do no tracing work.

What an actor holds itself (a room's history length, a session's username)
comes only by message: every listed actor is asked `Describe()` at once, and
the answers are waited for together, at most `ASK_SECONDS`. A paused actor
still answers (the runtime does, as Erlang's `sys:get_status` does for a
suspended process); one that cannot in time (slowed down, its mailbox full,
stopping) is shown with the runtime's counters alone.
"""

from __future__ import annotations

from flask import Blueprint, current_app, send_from_directory

from actors.chat.hub import ListSessions
from actors.chat.message import encode_result
from actors.chat.registry import ListRoomActors
from actors.runtime.actor import ActorError, Describe, ask_all
from actors.runtime.tracing import tracing
from app.api.routes import READ_METHODS, json_response
from app.ops.controls import controls_of

TRACE_SECONDS = 5.0  # tracing stays on this long after the last look
ASK_SECONDS = 1.0  # the page polls every half second and gives up after 4

bp = Blueprint("actor_view", __name__)


@bp.route("/actors")
def page():
    return send_from_directory(current_app.static_folder, "actors.html")


@bp.route("/api/actors", methods=READ_METHODS)
def actors():
    tracing.watch(TRACE_SECONDS)
    chat = current_app.extensions["nane"]
    rooms = _ask_list(chat.directory, ListRoomActors())
    sessions = _ask_list(chat.hub, ListSessions())
    core = [chat.registry, chat.hub] + ([chat.kozma] if chat.kozma is not None else []) + (
        [chat.directory] if chat.directory != chat.registry else [])
    sessions = sorted(sessions, key=_session_number)
    described = ask_all([*core, *rooms, *sessions], Describe(), ASK_SECONDS)

    def facts_of(ref) -> dict:
        return {**ref.stats(), **described.get(ref, {})}

    listed = [facts_of(ref) for ref in core]
    for room in rooms:
        # Every message reaches every connection (docs/protocol.md), so a room's receivers
        # are all the hub's sessions: the registry hands each message to the hub too.
        listed.append({**facts_of(room), "subscribers": len(sessions)})
    for session in sessions:
        facts = facts_of(session)
        listed.append({**facts, "outbox": facts["mailbox"],  # the mailbox is the outbox
                       "closed_with": _close(facts.get("closed_with"))})
    controls = controls_of(current_app)
    if controls is not None:  # what a fault control last did to each actor, for its card
        for facts in listed:
            touched = controls.touched.get(facts["name"])
            if touched is not None:
                facts["control"] = touched
    return json_response(encode_result({
        "tracing": tracing.on,
        "controls": controls is not None,
        "trace_seconds": TRACE_SECONDS,
        "actors": listed,
    }))


def _ask_list(actor, question) -> list:
    """The actor's answer; while it is paused, slowed or swamped, the last one it gave."""
    last = current_app.extensions.setdefault("nane_view_last", {})
    if not actor.stats()["paused"]:
        try:
            last[actor.name] = actor.ask(question, timeout=ASK_SECONDS)
        except ActorError:
            pass
    return [ref for ref in last.get(actor.name, []) if ref.alive]


def _close(reason) -> dict | None:
    """A session cut off but not yet gone from the hub: its close code and reason, as JSON."""
    if reason is None:
        return None
    return {"code": reason.code, "reason": reason.reason}


def _session_number(session) -> tuple:
    number = session.name.rpartition(":")[2]
    return (0, int(number)) if number.isdigit() else (1, session.name)
