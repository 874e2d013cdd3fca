"""Tracing for the actor view: which messages passed through each actor, only while someone looks.

The actor view (`/actors`) shows the last few messages every actor handled.
Remembering them costs something per message, so it happens only while the
view has looked within the last few seconds. An actor's turn reads
`tracing.on` once and, only when it is on, handles its messages through
`traced`; with nobody watching, tracing costs nothing per message.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent

from actors.runtime.messages import Ask, Describe, Probe, Stop

if TYPE_CHECKING:
    from actors.runtime.actor import Actor

TRACE_LENGTH = 8  # messages each actor remembers while tracing is on
TRACE_TEXT_LENGTH = 160  # characters of each remembered message shown


class Tracing:
    """Whether actors remember the messages they handle: only while someone watches.

    The actor view calls `watch` on every look; tracing then stays on for
    `seconds` after the last look and switches itself off. With nobody
    watching, the whole cost per message is reading `on`.
    """

    def __init__(self) -> None:
        self.on = False
        self.generation = 0  # bumped at every switch-on: older traces are stale
        self._until = 0.0
        self._timer: gevent.Greenlet | None = None

    def watch(self, seconds: float) -> None:
        """Trace from now until `seconds` after the last call."""
        self._until = time.monotonic() + seconds
        if not self.on:
            self.on = True
            self.generation += 1
        if self._timer is None:
            self._timer = gevent.spawn_later(seconds, self._expire)

    def _expire(self) -> None:
        left = self._until - time.monotonic()
        if left > 0:
            self._timer = gevent.spawn_later(left, self._expire)
        else:
            self.on = False
            self._timer = None


tracing = Tracing()


def as_text(message: Any, limit: int = TRACE_TEXT_LENGTH) -> str:
    """A message as the actor view shows it: a frame's text, or the message's repr, cut."""
    payload = getattr(message, "json", message)  # a frame on its way to a socket: its JSON
    if isinstance(payload, (bytes, bytearray)):
        text = bytes(payload[: limit * 4]).decode("utf-8", "replace")
    else:
        text = repr(message)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Trace:
    """The last `TRACE_LENGTH` messages one actor handled while tracing was on."""

    __slots__ = ("_messages", "_generation")

    def __init__(self) -> None:
        self._messages: deque[tuple[float, Any]] | None = None  # made on the first traced message
        self._generation = 0

    def remember(self, message: Any) -> None:
        """Keep `message` (only called while tracing is on).

        Messages marked `untraced` (the view's own questions) are left out,
        or every look would fill the traces with the looking itself.
        """
        if getattr(message, "untraced", False):
            return
        if self._messages is None or self._generation != tracing.generation:
            self._messages = deque(maxlen=TRACE_LENGTH)
            self._generation = tracing.generation
        self._messages.append((time.time(), message))

    def recent(self) -> list[dict[str, Any]]:
        """`[{"at": unix seconds, "message": text}]`, oldest first; [] when not tracing."""
        if not tracing.on or self._messages is None or self._generation != tracing.generation:
            return []
        return [{"at": at, "message": as_text(message)} for at, message in self._messages]


def remember(actor: Actor, message: Any) -> None:
    """Keep `message` in `actor`'s trace, as `receive` sees it (runtime questions are left out)."""
    if type(message) is Ask:
        message = message.message
    if type(message) in (Probe, Describe, Stop):
        return
    if actor.trace is None:
        actor.trace = Trace()
    actor.trace.remember(message)


def traced(actor: Actor) -> Callable[[Any], None]:
    """`actor.handle`, remembering each message first: what a turn uses while tracing is on."""
    def handle(message: Any) -> None:
        remember(actor, message)
        actor.handle(message)
    return handle
