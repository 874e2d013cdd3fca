"""RoomActor: one room's history."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Never

from actors.chat.message import Message, encode_list
from actors.runtime.actor import Actor


@dataclass(frozen=True, slots=True)
class Append:
    """Keep `message` (tell); with `drop_oldest`, let the oldest message go first.

    How many messages a room keeps is the registry's to count (it budgets every
    room's messages together), so it says when the oldest goes: the rule lives
    in one place, and the room only obeys it.
    """

    message: Message
    drop_oldest: bool = False


@dataclass(frozen=True, slots=True)
class Drop:
    """Let these messages go (tell): the registry keeps the rooms within their byte budgets."""

    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class GetHistory:
    """Ask: the `/history` body, oldest message first, as JSON bytes."""


# Every message a room answers (besides the runtime's own `Probe` and `Describe`).
RoomMessage = Append | Drop | GetHistory


class RoomActor(Actor):
    """Owns a room's messages, and serves them as `/history`.

    Every accepted message goes to every open connection whatever its room
    (SPEC), so a room's subscribers are all connections: that one set is
    owned by the hub, not copied into every room. The registry hands each
    message to the room and to the hub in the order it stamped them.

    Which messages stay is decided by the registry, which counts and budgets
    them (`Append.drop_oldest`, `Drop`); the room keeps what it is told to.

    Args:
        name: the room's first-seen spelling.
    """

    __slots__ = ("room", "_history", "_history_body")

    kind = "room"
    hibernate = True  # one message now and then: no mailbox kept between them

    def __init__(self, name: str):
        super().__init__(f"room:{name}")
        self.room = name
        self._history: deque[Message] = deque()
        self._history_body: bytes | None = None  # cached until the next message

    def receive(self, message: RoomMessage) -> bytes | None:
        match message:
            case Append(posted, drop_oldest):
                if drop_oldest and self._history:
                    self._history.popleft()
                self._history.append(posted)
                self._history_body = None
            case Drop(messages):
                for gone in messages:  # most often the oldest: found at once
                    if gone in self._history:
                        self._history.remove(gone)
                self._history_body = None
            case GetHistory():
                if self._history_body is None:
                    self._history_body = encode_list([m.json for m in self._history])
                return self._history_body
            case _:
                unexpected: Never = message  # mypy fails here if a RoomMessage has no case above
                raise TypeError(f"room cannot handle {unexpected!r}")
        return None  # a tell: nobody waits for an answer

    def on_stop(self, reason: object) -> None:
        # A forgotten room's messages go now: the actor object itself may wait for the
        # cyclic garbage collector (it and its reference refer to each other).
        self._history.clear()
        self._history_body = None

    def describe(self) -> dict:
        return {"room": self.room, "history": len(self._history)}
