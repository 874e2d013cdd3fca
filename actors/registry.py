"""RegistryActor: the directory of rooms — find a room by name, create it on its first message."""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

from actors.actor import Actor, ActorError, ActorRef
from actors.message import Draft, Message, encode_list, format_created
from actors.hub import Deliver
from actors.room import Append, RoomActor
from actors.supervisor import Supervisor

log = logging.getLogger("nane.registry")

MAX_WAITING_POSTS = 10_000


@dataclass(frozen=True, slots=True)
class Post:
    """A validated message from `username` (tell).

    `reply_to` (the poster's session, when it opted in to error frames) hears
    about a message that was accepted here but could not be delivered later,
    which only happens when rooms are shared through Redis.
    """

    draft: Draft
    username: str
    reply_to: ActorRef | None = None


@dataclass(frozen=True, slots=True)
class ListRooms:
    """Ask: the `/api/rooms` body, most recently active room first, as JSON bytes."""


@dataclass(frozen=True, slots=True)
class FindRoom:
    """Ask: the `Room` called `name` (any case), or None."""

    name: str


@dataclass(frozen=True, slots=True)
class ListRoomActors:
    """Ask: every room's actor reference, most recently active first (for the actor view)."""

    untraced: ClassVar[bool] = True  # the view's own question stays out of traces


@dataclass(frozen=True, slots=True)
class RoomGaveUp:
    """The rooms' supervisor gave up on `room` (tell): forget it; its next message makes a fresh one."""

    room: ActorRef


@dataclass(frozen=True, slots=True)
class ForgetRooms:
    """Ask: drop every room and its history, as a restarted server would have (answers how many)."""


@dataclass(frozen=True, slots=True)
class Room:
    """What the registry knows of a room: its actor and its `/api/rooms/{name}` object."""

    name: str
    actor: ActorRef
    json: bytes


class _Entry:
    __slots__ = ("name", "actor", "last_message", "json")

    def __init__(self, name: str, actor: ActorRef):
        self.name = name
        self.actor = actor
        self.last_message: Message | None = None
        self.json = b""


class RegistryActor(Actor):
    """Owns the name -> room mapping, each room's first spelling and last message.

    Lookup ignores case; a room keeps the spelling of its first message. The
    registry is also the sequencer: it stamps every message with `created` and
    hands it to the room (to keep) and to the hub (to deliver) in that order,
    so stamps are unique and increasing, and every connection receives all
    messages in one order — each sender's in the order sent, across rooms. At most `max_rooms`
    rooms live at once; the least recently active one is forgotten first.

    Args:
        hub: the fan-out to every connection.
        max_rooms: how many rooms may exist.
        max_messages_in_room: each room's history length.
    """

    kind = "registry"

    def __init__(self, hub: ActorRef, max_rooms: int, max_messages_in_room: int):
        super().__init__("registry", mailbox_limit=MAX_WAITING_POSTS)
        self._hub = hub
        self._max_rooms = max_rooms
        self._max_messages = max_messages_in_room
        self._rooms: OrderedDict[str, _Entry] = OrderedDict()  # least recently active first
        self._rooms_body: bytes | None = None
        self._last_created = 0
        self._supervisor = Supervisor("rooms", on_give_up=self._gave_up)
        self.forgotten = 0

    def receive(self, message):
        match message:
            case Post(draft, username, _):
                self._post(draft, username)
            case ListRooms():
                if self._rooms_body is None:
                    self._rooms_body = encode_list([e.json for e in reversed(self._rooms.values())])
                return self._rooms_body
            case ListRoomActors():
                return [entry.actor for entry in reversed(self._rooms.values())]
            case FindRoom(name):
                entry = self._rooms.get(fold(name))
                return entry and Room(entry.name, entry.actor, entry.json)
            case RoomGaveUp(room):
                key = fold(room.name.removeprefix("room:"))
                if key in self._rooms and self._rooms[key].actor == room:
                    del self._rooms[key]
                    self._rooms_body = None
                    log.warning("event=room_given_up room=%r rooms=%d", room.name, len(self._rooms))
            case ForgetRooms():
                rooms, self._rooms = self._rooms, OrderedDict()
                self._rooms_body = None
                for entry in rooms.values():
                    entry.actor.stop()
                return len(rooms)
            case _:
                raise TypeError(f"registry cannot handle {message!r}")

    def _post(self, draft: Draft, username: str) -> None:
        key = fold(draft.room)
        entry = self._rooms.get(key)
        if entry is not None and not entry.actor.alive:  # given up on, and not forgotten yet
            del self._rooms[key]
            entry = None
        if entry is None:
            entry = self._create(key, draft.room)
        else:
            self._rooms.move_to_end(key)
        posted = Message(entry.name, self._stamp(), username, draft.text, draft.id)
        entry.last_message = posted
        entry.json = room_json(entry.name, posted)
        self._rooms_body = None
        entry.actor.tell(Append(posted))
        self._hub.tell(Deliver(posted))

    def _create(self, key: str, name: str) -> _Entry:
        if len(self._rooms) >= self._max_rooms:
            _, idlest = self._rooms.popitem(last=False)
            idlest.actor.stop()
            self.forgotten += 1
            log.info("event=room_forgotten room=%r rooms=%d", idlest.name, len(self._rooms))
        room = RoomActor(name, self._max_messages).start(self._supervisor)
        entry = self._rooms[key] = _Entry(name, room)
        return entry

    def _stamp(self) -> str:
        self._last_created = max(time.time_ns(), self._last_created + 1)
        return format_created(self._last_created)

    def _gave_up(self, room: ActorRef) -> None:
        try:
            self.ref.tell(RoomGaveUp(room))
        except ActorError:
            pass  # the registry is stopping or swamped: the next post finds the room dead

    def on_stop(self, reason) -> None:
        for entry in self._rooms.values():
            entry.actor.stop()

    def info(self) -> dict:
        return {"rooms": len(self._rooms), "forgotten": self.forgotten}


def fold(name: str) -> str:
    """Room names match whatever their case."""
    return name.lower()


def room_json(name: str, last_message: Message) -> bytes:
    """A room object: `{"name", "last_message"}`, the message without its `id`."""
    return (b'{"name":' + json.dumps(name, ensure_ascii=False).encode()
            + b',"last_message":' + last_message.summary + b"}")
