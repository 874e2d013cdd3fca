"""HubActor: the set of open sessions, and the fan-out of every message to all of them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

from actors.actor import Actor, ActorRef, ActorStopped, MailboxFull
from actors.message import Message
from actors.session import SLOW_CONSUMER, Disconnect

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
    """Send an accepted message to every session (tell)."""

    message: Message


@dataclass(frozen=True, slots=True)
class ListSessions:
    """Ask: the references of every open session (for the actor view)."""

    untraced: ClassVar[bool] = True  # the view's own question stays out of traces


@dataclass(frozen=True, slots=True)
class DisconnectAll:
    """Close every session with `reason` (ask: answers how many were closed)."""

    reason: Disconnect


class HubActor(Actor):
    """Owns the one set of receivers that all rooms share.

    SPEC sends every message to every connection, whatever its room, so the
    receivers of each room are the same set: keeping it once here makes a
    connect or disconnect one set operation whether there are 10 rooms or
    10,000, and memory grows with connections, not rooms x connections.
    The hub never waits for a socket: it drops each message's bytes into the
    session's bounded outbox, and a session whose outbox is full is cut off.
    """

    kind = "hub"

    def __init__(self):
        super().__init__("hub")
        self._sessions: set[ActorRef] = set()
        self.delivered = 0

    def receive(self, message):
        match message:
            case Deliver(posted):
                self._fan_out(posted.json)
            case Join(session):
                self._sessions.add(session)
            case Leave(session):
                self._sessions.discard(session)
            case ListSessions():
                return list(self._sessions)
            case DisconnectAll(reason):
                sessions, self._sessions = self._sessions, set()
                for session in sessions:
                    session.kill(reason)
                return len(sessions)
            case _:
                raise TypeError(f"hub cannot handle {message!r}")

    def _fan_out(self, frame: bytes) -> None:
        gone = []
        for session in self._sessions:
            try:
                session.tell(frame)
            except MailboxFull:
                log.warning("event=slow_consumer session=%s", session.name)
                session.kill(SLOW_CONSUMER)
                gone.append(session)
            except ActorStopped:
                gone.append(session)
        self._sessions.difference_update(gone)
        self.delivered += len(self._sessions)

    def info(self) -> dict:
        return {"sessions": len(self._sessions), "delivered": self.delivered}
