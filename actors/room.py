"""RoomActor: one room's history, and the hand-off of each new message to its receivers."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from actors.actor import Actor, ActorRef
from actors.hub import Deliver
from actors.message import Message, encode_list


@dataclass(frozen=True, slots=True)
class Append:
    """Keep `message` and send it to every receiver (tell)."""

    message: Message


@dataclass(frozen=True, slots=True)
class GetHistory:
    """Ask: the `/history` body, oldest message first, as JSON bytes."""


class RoomActor(Actor):
    """Owns a room's last `max_messages` messages.

    Every accepted message goes to every open connection (SPEC), so a room's
    receivers are all of them: the room passes each message to the hub, which
    owns that one set, instead of every room keeping a copy of it.

    Args:
        name: the room's first-seen spelling.
        max_messages: how many messages the room keeps.
        hub: where each appended message goes for fan-out.
    """

    kind = "room"

    def __init__(self, name: str, max_messages: int, hub: ActorRef):
        super().__init__(f"room:{name}")
        self.room = name
        self._history: deque[Message] = deque(maxlen=max_messages)
        self._hub = hub
        self._history_body: bytes | None = None  # cached until the next message

    def receive(self, message):
        match message:
            case Append(posted):
                self._history.append(posted)
                self._history_body = None
                self._hub.tell(Deliver(posted))
            case GetHistory():
                if self._history_body is None:
                    self._history_body = encode_list([m.json for m in self._history])
                return self._history_body
            case _:
                raise TypeError(f"room cannot handle {message!r}")

    def info(self) -> dict:
        return {"room": self.room, "history": len(self._history)}
