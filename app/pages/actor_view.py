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

The answer is bounded, because anyone may ask for it: at most
`max_actors_listed` rooms (the most recently active) and as many sessions (the
oldest), with `rooms_total` and `sessions_total` for the rest. It is built by
one request at a time, in the request's greenlet, from the actors' answers
(never inside an actor's turn), and reused by every request that comes while
it is fresh (`ViewCache`): however many clients poll, building it takes a
small, bounded part of the process's time.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

from flask import Blueprint, current_app, send_from_directory
from gevent.lock import Semaphore

from actors.chat.hub import ListSessions
from actors.chat.message import encode_result
from actors.chat.registry import ListRoomActors
from actors.runtime.actor import ActorError, Describe, ask_all
from actors.runtime.tracing import tracing
from app.api.routes import READ_METHODS, error_response, json_response
from app.ops.controls import controls_of

TRACE_SECONDS = 5.0  # tracing stays on this long after the last look
ASK_SECONDS = 1.0  # the page polls every half second and gives up after 4
REUSE_FACTOR = 10  # an answer is reused for 10 times what it cost to build...
MAX_REUSE_SECONDS = 1.0  # ...and at most this long

bp = Blueprint("actor_view", __name__)


@bp.route("/actors")
def page():
    return send_from_directory(current_app.static_folder, "actors.html")


class ViewCache:
    """The last `/api/actors` body: built by one request at a time, reused while it is fresh.

    A request that finds a build under way waits for it and takes its answer
    (so the view has a concurrency of one). An answer is fresh for
    `REUSE_FACTOR` times what it cost to build, at most `MAX_REUSE_SECONDS`:
    building then takes at most about a tenth of the process's time, and a
    small view (a lesson, a test) is as good as rebuilt at every look. An
    answer is never reused once `key` differs: it changes when a fault control
    touches an actor, and a view built before tracing was on (its traces empty)
    is never reused at all.
    """

    def __init__(self):
        self._lock = Semaphore()
        self._body: bytes | None = None
        self._key: object = None
        self._fresh_until = 0.0

    def get(self, key: object, reusable: bool, build: Callable[[], bytes]) -> bytes | None:
        """The body for `key`, built by `build` unless a fresh one is at hand; None when busy."""
        if not self._lock.acquire(timeout=2 * ASK_SECONDS):
            return None
        try:
            if self._body is not None and key == self._key and time.monotonic() < self._fresh_until:
                return self._body
            started = time.monotonic()
            body = build()
            cost = time.monotonic() - started
            self._body, self._key = (body, key) if reusable else (None, None)
            self._fresh_until = time.monotonic() + min(REUSE_FACTOR * cost, MAX_REUSE_SECONDS)
            return body
        finally:
            self._lock.release()


@bp.route("/api/actors", methods=READ_METHODS)
def actors():
    reusable = tracing.on  # a view from before this look has no traces: build it afresh
    tracing.watch(TRACE_SECONDS)
    controls = controls_of(current_app)
    key = tuple((name, touched["at"]) for name, touched in controls.touched.items()) \
        if controls is not None else None
    cache = current_app.extensions.get("nane_view_cache")
    if cache is None:
        cache = current_app.extensions["nane_view_cache"] = ViewCache()
    body = cache.get(key, reusable, _build_view)
    if body is None:
        busy = error_response("the actor view is busy, try again", 503)
        busy.headers["Retry-After"] = "1"
        return busy
    return json_response(body)


def _build_view() -> bytes:
    chat = current_app.extensions["nane"]
    listed_at_most = current_app.config["NANE"].max_actors_listed
    all_rooms = _ask_list(chat.directory, ListRoomActors())
    all_sessions = _ask_list(chat.hub, ListSessions())
    core = [chat.registry, chat.hub] + ([chat.kozma] if chat.kozma is not None else []) + (
        [chat.directory] if chat.directory != chat.registry else [])
    all_rooms = [ref for ref in all_rooms if ref.alive]
    all_sessions = [ref for ref in all_sessions if ref.alive]
    rooms = all_rooms[:listed_at_most]  # the most recently active
    sessions = heapq.nsmallest(listed_at_most, all_sessions, key=_session_number)  # the oldest
    described = ask_all([*core, *rooms, *sessions], Describe(), ASK_SECONDS)

    def facts_of(ref) -> dict:
        return {**ref.stats(), **described.get(ref, {})}

    listed = [facts_of(ref) for ref in core]
    for room in rooms:
        # Every message reaches every connection (docs/protocol.md), so a room's receivers
        # are all the hub's sessions: the registry hands each message to the hub too.
        listed.append({**facts_of(room), "subscribers": len(all_sessions)})
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
    return encode_result({
        "tracing": tracing.on,
        "controls": controls is not None,
        "trace_seconds": TRACE_SECONDS,
        "rooms_total": len(all_rooms),
        "sessions_total": len(all_sessions),
        "actors": listed,
    })


def _ask_list(actor, question) -> list:
    """The actor's answer; while it is paused, slowed or swamped, the last one it gave."""
    last = current_app.extensions.setdefault("nane_view_last", {})
    if not actor.stats()["paused"]:
        try:
            last[actor.name] = actor.ask(question, timeout=ASK_SECONDS)
        except ActorError:
            pass
    return last.get(actor.name, [])


def _close(reason) -> dict | None:
    """A session cut off but not yet gone from the hub: its close code and reason, as JSON."""
    if reason is None:
        return None
    return {"code": reason.code, "reason": reason.reason}


def _session_number(session) -> tuple:
    number = session.name.rpartition(":")[2]
    return (0, int(number)) if number.isdigit() else (1, session.name)
