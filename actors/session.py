"""SessionActor: one connection's outbox, and the greenlet that writes it to the socket.

The actor's mailbox IS the outbox: rooms and the hub drop encoded frames into
it and return at once, and only this actor's greenlet waits on the socket, so
a slow reader delays nobody but itself. The mailbox is bounded: a client that
stops reading fills it and is cut off (see `hub.HubActor`).

The session knows "write these frames" and "close with this code", not what a
socket or websocket library is: the transport it is given does that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from actors.actor import Actor

log = logging.getLogger("nane.session")


class Transport(Protocol):
    """What a session needs from a websocket (see app/transport.py)."""

    def send(self, frames: list[bytes]) -> None:
        """Write JSON text frames, in order; raises OSError when the peer is gone."""

    def close(self, code: int, reason: str) -> None:
        """Send a close frame (bounded in time) and drop the connection."""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Why a session was cut off: the websocket close code and reason."""

    code: int
    reason: str


SLOW_CONSUMER = Disconnect(1008, "slow consumer")
GOING_AWAY = Disconnect(1001, "server shutting down")


class SessionActor(Actor):
    """Writes frames to one websocket, several at a time when they queue up.

    Args:
        transport: the connection's writing side.
        username: who is connected (for logs and the actor view).
        max_outbox: frames that may wait before the client counts as too slow.
    """

    kind = "session"

    def __init__(self, name: str, transport: Transport, username: str, max_outbox: int):
        super().__init__(name, mailbox_limit=max_outbox)
        self.username = username
        self._transport = transport
        self._broken = False
        self.sent = 0

    def receive(self, frame: bytes) -> None:
        if self._broken:
            return
        frames = [frame, *self._pending()]
        try:
            self._transport.send(frames)
        except Exception as error:  # the peer is gone; the reader side will notice too
            self._broken = True
            log.info("event=write_failed session=%s error=%r", self.name, error)
            self._transport.close(1006, "write failed")
        else:
            self.sent += len(frames)

    def on_stop(self, reason) -> None:
        if isinstance(reason, Disconnect):
            log.info("event=disconnect session=%s code=%d reason=%r",
                     self.name, reason.code, reason.reason)
            self._transport.close(reason.code, reason.reason)
        else:
            self._transport.close(1000, "")

    def info(self) -> dict:
        return {"username": self.username, "sent": self.sent}
