"""HubActor: the set of open sessions, and the fan-out of every message to all of them."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import gevent

from actors.actor import Actor, ActorRef, ActorStopped, MailboxFull
from actors.message import Message
from actors.session import SLOW_CONSUMER, Disconnect, KeepAlive

log = logging.getLogger("nane.hub")


@dataclass(frozen=True, slots=True)
class Join:
    """A new session wants every message from now on (tell)."""

    session: ActorRef


@dataclass(frozen=True, slots=True)
class Leave:
    """A session has closed (tell)."""

    session: ActorRef


@dataclass(frozen=True, slots=True)
class Deliver:
    """Send an accepted message to every session (tell); `handed_at` times the fan-out."""

    message: Message
    handed_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class ListSessions:
    """Ask: the references of every open session (for the actor view)."""

    untraced: ClassVar[bool] = True  # the view's own question stays out of traces


@dataclass(frozen=True, slots=True)
class DisconnectAll:
    """Close every session with `reason` now (ask: answers how many were closed)."""

    reason: Disconnect


@dataclass(frozen=True, slots=True)
class DrainAll:
    """Graceful stop: every session writes what it has queued, then closes with `reason`.

    Ask: answers the sessions, so the caller can wait for them. From now on the
    hub delivers nothing more and stops every session that joins late the same way.
    """

    reason: Disconnect


@dataclass(frozen=True, slots=True)
class Tick:
    """Time to let every session ping its peer (the hub sends it to itself)."""


class HubActor(Actor):
    """Owns the one set of receivers that all rooms share.

    SPEC sends every message to every connection, whatever its room, so the
    receivers of each room are the same set: keeping it once here makes a
    connect or disconnect one set operation whether there are 10 rooms or
    10,000, and memory grows with connections, not rooms x connections.
    The hub never waits for a socket: it drops each message's bytes into the
    session's bounded outbox, and a session whose outbox is full is cut off.

    Args:
        tick_seconds: how often every session gets a `KeepAlive` (None: never).
        observe_fan_out: called with the seconds from a room's hand-off to the
            last outbox, once per message (the fan-out latency metric).
    """

    kind = "hub"

    def __init__(self, tick_seconds: float | None = None,
                 observe_fan_out: Callable[[float], None] | None = None):
        super().__init__("hub")
        self._sessions: set[ActorRef] = set()
        self._tick_seconds = tick_seconds
        self._ticker: gevent.Greenlet | None = None
        self._observe = observe_fan_out
        self._draining: Disconnect | None = None
        self.delivered = 0
        self.slow_consumers = 0

    def on_start(self) -> None:
        if self._tick_seconds and self._ticker is None:  # not again after a restart
            self._ticker = gevent.spawn(self._tick_forever)

    def receive(self, message):
        match message:
            case Deliver(posted, handed_at):
                self._fan_out(posted)
                if self._observe is not None:
                    self._observe(time.monotonic() - handed_at)
            case Join(session):
                if self._draining is not None:
                    session.stop(self._draining)
                else:
                    self._sessions.add(session)
            case Leave(session):
                self._sessions.discard(session)
            case ListSessions():
                return list(self._sessions)
            case Tick():
                self._fan_out(KeepAlive(), count=False)
            case DrainAll(reason):
                self._draining = reason
                sessions, self._sessions = self._sessions, set()
                for session in sessions:
                    session.stop(reason)
                return list(sessions)
            case DisconnectAll(reason):
                sessions, self._sessions = self._sessions, set()
                for session in sessions:
                    session.kill(reason)
                return len(sessions)
            case _:
                raise TypeError(f"hub cannot handle {message!r}")

    def _fan_out(self, frame, count: bool = True) -> None:
        gone = []
        for session in self._sessions:
            try:
                session.tell(frame)
            except MailboxFull:
                log.warning("event=slow_consumer session=%s", session.name)
                session.kill(SLOW_CONSUMER)
                self.slow_consumers += 1
                gone.append(session)
            except ActorStopped:
                gone.append(session)
        self._sessions.difference_update(gone)
        if count:
            self.delivered += len(self._sessions)

    def _tick_forever(self) -> None:
        while True:
            gevent.sleep(self._tick_seconds)
            try:
                self.ref.tell(Tick())
            except ActorStopped:
                return
            except MailboxFull:
                pass

    def on_stop(self, reason) -> None:
        if self._ticker is not None:
            self._ticker.kill(block=False)

    def info(self) -> dict:
        outboxes = [s.mailbox_size for s in self._sessions]
        return {"sessions": len(self._sessions), "delivered": self.delivered,
                "slow_consumers": self.slow_consumers,
                "outbox_max": max(outboxes, default=0), "outbox_total": sum(outboxes)}
