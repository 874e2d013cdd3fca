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

import time
from collections.abc import Callable

from flask import Blueprint, Response, current_app, send_from_directory
from gevent.lock import Semaphore

from actors.chat.message import encode_result
from app import door
from app.api.routes import READ_METHODS, error_response, json_response

TRACE_SECONDS = 5.0  # tracing stays on this long after the last look
ASK_SECONDS = 1.0  # the page polls every half second and gives up after 4
REUSE_FACTOR = 10  # an answer is reused for 10 times what it cost to build...
MAX_REUSE_SECONDS = 1.0  # ...and at most this long

bp = Blueprint("actor_view", __name__)


@bp.route("/actors")
def page() -> Response:
    return send_from_directory(current_app.static_folder or "", "actors.html")


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

    def __init__(self) -> None:
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
def actors() -> Response:
    nane = door.nane()
    # a view from before this look has no traces: build it afresh
    reusable = nane.chat.look(TRACE_SECONDS)
    controls = nane.controls
    key = tuple((name, touched["at"]) for name, touched in controls.touched.items()) \
        if controls is not None else None
    body = nane.view_cache.get(key, reusable, _build_view)
    if body is None:
        busy = error_response("the actor view is busy, try again", 503)
        busy.headers["Retry-After"] = "1"
        return busy
    return json_response(body)


def _build_view() -> bytes:
    nane = door.nane()
    view = nane.chat.actors_view(nane.config.max_actors_listed, ASK_SECONDS)
    controls = nane.controls
    if controls is not None:  # what a fault control last did to each actor, for its card
        for facts in view.actors:
            touched = controls.touched.get(facts["name"])
            if touched is not None:
                facts["control"] = touched
    return encode_result({
        "tracing": view.tracing,
        "controls": controls is not None,
        "trace_seconds": TRACE_SECONDS,
        "rooms_total": view.rooms_total,
        "sessions_total": view.sessions_total,
        "actors": view.actors,
    })
