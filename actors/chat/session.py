"""SessionActor: one connection's outbox, written to the socket whenever it has frames.

The actor's mailbox IS the outbox: the hub (every message, and a resume's
replay as one `Replay`) and the connection's reader (pongs, error frames) drop
encoded frames into it and return at once, and only the worker running this
actor waits on the socket (the dispatcher hands the other actors to another
worker meanwhile), so a slow reader delays nobody but itself. The mailbox is
bounded in frames and in bytes: a client that stops reading fills it and is
cut off (see `hub.HubActor`).

The session also keeps the connection alive: on the hub's `KeepAlive` ticks it
sends a websocket protocol ping every `ping_interval` seconds, and closes a
peer that has not answered within `ping_timeout` (a client that vanished
without closing, behind a NAT or a dead network, sends no FIN: only this finds it).

The session knows "write these frames" and "close with this code", not what a
socket or websocket library is: the transport it is given does that.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

from gevent.event import AsyncResult

from actors import logfmt
from actors.chat.message import Frame
from actors.chat.resume import Replay
from actors.runtime.actor import Actor
from actors.runtime.supervisor import GaveUp, Supervisor

log = logging.getLogger("nane.session")


class Transport(Protocol):
    """What a session needs from a websocket (see app/websocket/transport.py)."""

    def send(self, frames: list[Frame]) -> None:
        """Write text frames, in order; raises OSError when the peer is gone."""

    def ping(self) -> None:
        """Send a websocket protocol ping; raises OSError when the peer is gone."""

    def answered(self) -> bool:
        """Has the peer sent anything (a pong, a frame) since the last `ping`?"""

    def close(self, code: int, reason: str) -> None:
        """Send a close frame (bounded in time) and drop the connection."""

    def go_silent(self) -> None:
        """Read nothing more until closed (a fault control: the peer sees a dead link)."""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Why a session was cut off: the websocket close code and reason."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """How a session ended, for whoever started it: why the server cut it off (if it did),
    and how many frames it wrote. `on_stop` sends it, as Erlang's monitor sends 'DOWN'."""

    closed_with: Disconnect | None
    sent: int


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """The hub's periodic tick: ping the peer when due, close it if it never answered (tell)."""


@dataclass(frozen=True, slots=True)
class GoSilent:
    """Fault control (ask): stop reading; paused as well, the session then writes nothing either."""


SLOW_CONSUMER = Disconnect(1008, "slow consumer")
GOING_AWAY = Disconnect(1001, "server shutting down")
PING_TIMEOUT = Disconnect(1011, "ping timeout")
GAVE_UP = Disconnect(1011, "internal error")
# A session's run that dies (a bug, or the crash control) is restarted with its outbox intact.
SUPERVISOR = Supervisor("sessions")


class SessionActor(Actor):
    """Writes frames to one websocket, several at a time when they queue up.

    Args:
        transport: the connection's writing side.
        username: who is connected (for logs and the actor view).
        max_outbox: frames that may wait before the client counts as too slow.
        max_outbox_bytes: bytes of frames that may wait, likewise (None: no byte budget).
        ping_interval: seconds between protocol pings.
        ping_timeout: seconds a ping may go unanswered before the peer counts as gone.
        positions: a `?v=2` connection: each message goes out with its position.
        ended: set to a `SessionEnded` when the session stops.
    """

    __slots__ = ("username", "_transport", "_broken", "_ping_interval", "_ping_timeout",
                 "_next_ping", "_awaiting_pong_since", "closed_with", "sent", "writes",
                 "_positions", "_ended")

    kind = "session"

    def __init__(self, name: str, transport: Transport, username: str, max_outbox: int,
                 ping_interval: float = 25.0, ping_timeout: float = 20.0,
                 max_outbox_bytes: int | None = None, positions: bool = False,
                 ended: AsyncResult | None = None) -> None:
        super().__init__(name, mailbox_limit=max_outbox, mailbox_bytes=max_outbox_bytes)
        self._positions = positions
        self.username = username
        self._transport = transport
        self._broken = False
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._next_ping = time.monotonic() + ping_interval
        self._awaiting_pong_since: float | None = None
        self.closed_with: Disconnect | None = None  # why the server cut it off, if it did
        self.sent = 0
        self.writes = 0  # system calls: sent / writes is how many frames each carried
        self._ended = ended

    def weigh(self, message: object) -> int:
        """A frame weighs its JSON (what it costs us while it waits); a tick weighs nothing."""
        if isinstance(message, Frame):
            return len(message.json)
        return message.weight if type(message) is Replay else 0

    def receive(self, message: object) -> None:
        if type(message) is KeepAlive:
            self._keep_alive()
            return
        if type(message) is GoSilent:
            self._transport.go_silent()
            return
        frames: list[Frame] = []
        tick = False
        for queued in (message, *self._pending()):
            kind = type(queued)
            if kind is KeepAlive:
                tick = True
            elif kind is Replay:
                frames.extend(queued.frames)
            else:
                frames.append(queued)
        if self._positions:
            frames = [frame.v2 for frame in frames]
        if frames and not self._broken:
            try:
                self._transport.send(frames)
            except Exception as error:  # the peer is gone; the reader side will notice too
                self._broken = True
                log.info("event=write_failed session=%s error=%s", self.name, logfmt.value(repr(error)))
                self._transport.close(1006, "write failed")
            else:
                self.sent += len(frames)
                self.writes += 1
        if tick:
            self._keep_alive()

    def _keep_alive(self) -> None:
        if self._broken:
            return
        now = time.monotonic()
        if self._awaiting_pong_since is not None:
            if self._transport.answered():
                self._awaiting_pong_since = None
            elif now - self._awaiting_pong_since >= self._ping_timeout:
                self._cut_off(PING_TIMEOUT)
                return
        if self._awaiting_pong_since is None and now >= self._next_ping:
            try:
                self._transport.ping()
            except Exception as error:
                self._broken = True
                log.info("event=write_failed session=%s error=%s", self.name, logfmt.value(repr(error)))
                self._transport.close(1006, "write failed")
                return
            self._awaiting_pong_since = now
            self._next_ping = now + self._ping_interval

    def _cut_off(self, reason: Disconnect) -> None:
        """Close the socket now; the reader sees the end and stops this session."""
        self._broken = True
        self.closed_with = reason
        log.info("event=disconnect session=%s code=%d reason=%s",
                 self.name, reason.code, logfmt.value(reason.reason))
        self._transport.close(reason.code, reason.reason)

    def on_stop(self, reason: object) -> None:
        if isinstance(reason, GaveUp):  # its supervisor gave up on it
            reason = GAVE_UP
        if isinstance(reason, Disconnect) and self.closed_with is None:
            self.closed_with = reason
        try:
            if isinstance(reason, Disconnect):
                log.info("event=disconnect session=%s code=%d reason=%s",
                         self.name, reason.code, logfmt.value(reason.reason))
                self._transport.close(reason.code, reason.reason)
            else:
                self._transport.close(1000, "")
        finally:  # even when a kill interrupts the close
            if self._ended is not None:
                self._ended.set(SessionEnded(self.closed_with, self.sent))

    def describe(self) -> dict[str, object]:
        return {"username": self.username, "sent": self.sent, "writes": self.writes,
                "closed_with": self.closed_with}
