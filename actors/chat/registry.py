"""RegistryActor: the sequencer and the directory of rooms — stamp, order, find, create, budget."""

from __future__ import annotations

import json
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import ClassVar, Never

from actors import logfmt
from actors.chat import resume
from actors.chat.budget import Held, Shares
from actors.chat.hub import Deliver
from actors.chat.message import Clock, Draft, Message, format_created
from actors.chat.room import Append, Drop, RoomActor
from actors.runtime.actor import Actor, ActorError, ActorRef
from actors.runtime.supervisor import Supervisor

log = logging.getLogger("nane.registry")

MAX_WAITING_POSTS = 10_000


@dataclass(frozen=True, slots=True)
class Post:
    """A validated message from `username`, who connected from `address` (tell).

    `address` is whose share of the budgets the message counts against
    (`max_history_bytes_per_address`, `max_rooms_per_address`). `reply_to`
    (the poster's session, when it opted in to error frames) hears about a
    message that was accepted here but could not be delivered later, which
    only happens when rooms are shared through Redis.
    """

    draft: Draft
    username: str
    reply_to: ActorRef | None = None
    address: str = ""


@dataclass(frozen=True, slots=True)
class ListRooms:
    """Ask: every room's object (JSON bytes), most recently active first.

    The answer is the same tuple until a room changes, so whoever builds the
    `/api/rooms` body from it can keep that body until then, outside any turn.
    """


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


# Every message the registry answers (besides the runtime's own `Probe` and `Describe`).
RegistryMessage = Post | ListRooms | ListRoomActors | FindRoom | RoomGaveUp | ForgetRooms


@dataclass(frozen=True, slots=True)
class Room:
    """What the registry knows of a room: its actor and its `/api/rooms/{name}` object."""

    name: str
    actor: ActorRef
    json: bytes


class _Entry:
    """A room as the registry keeps it: its actor, its room object, who made it, what it holds."""

    __slots__ = ("key", "name", "actor", "json", "creator", "held")

    def __init__(self, key: str, name: str, actor: ActorRef, creator: str):
        self.key = key
        self.name = name
        self.actor = actor
        self.json = b""
        self.creator = creator
        self.held: deque[Held[_Entry]] = deque()  # its messages as the budget counts them, oldest first


class RegistryActor(Actor):
    """The sequencer and the directory of rooms: find a room by name, create it, stamp and order.

    Lookup ignores case; a room keeps the spelling of its first message. Every
    message is stamped here with `created` and its position, then handed to
    its room (to keep) and to the hub (to deliver) in that order, so stamps are
    unique and increasing and every connection receives all messages in one
    order — each sender's in the order sent, across rooms. The registry does
    nothing slow in its turn: it answers nobody's resume (the hub does, see
    actors/chat/resume.py) and asks no other actor anything.

    Budgets (actors/chat/budget.py): at most `max_rooms` rooms, and the
    histories together within `max_history_bytes` (each message counted by its
    JSON), each client address within its share of both; past a bound the
    address holding the most gives way, its oldest messages or idlest room
    first. The registry decides what is let go and tells the room (`Drop`); a
    room whose last message goes is forgotten (a room without messages appears
    nowhere).

    Args:
        hub: the fan-out to every connection.
        max_rooms: how many rooms may exist.
        max_messages_in_room: each room's history length.
        max_history_bytes: bytes of messages all rooms keep together.
        max_history_bytes_per_address, max_rooms_per_address: one address's shares.
    """

    kind = "registry"

    def __init__(self, hub: ActorRef, max_rooms: int, max_messages_in_room: int,
                 max_history_bytes: int = 1 << 62, max_history_bytes_per_address: int = 1 << 62,
                 max_rooms_per_address: int = 1 << 62):
        super().__init__("registry", mailbox_limit=MAX_WAITING_POSTS)
        self._hub = hub
        self._max_messages = max_messages_in_room
        self._shares: Shares[_Entry] = Shares(max_history_bytes, max_history_bytes_per_address,
                                              max_rooms, max_rooms_per_address)
        self._rooms: OrderedDict[str, _Entry] = OrderedDict()  # least recently active first
        self._listing: tuple[bytes, ...] | None = None
        self._clock = Clock()
        self.run = resume.new_run("m")
        self._seq = 0  # the last message's place in the one order
        self._supervisor = Supervisor("rooms", on_give_up=self._gave_up)
        self.forgotten = 0
        self.forgotten_messages = 0

    def on_start(self) -> None:
        self._hub.tell(resume.StartAt(self.run, (self._seq, 0)))

    def receive(self, message: RegistryMessage) -> tuple[bytes, ...] | list[ActorRef] | Room | int | None:
        match message:
            case Post(draft, username, _, address):
                self._post(draft, username, address)
            case ListRooms():
                if self._listing is None:
                    self._listing = tuple(e.json for e in reversed(self._rooms.values()))
                return self._listing
            case ListRoomActors():
                return [entry.actor for entry in reversed(self._rooms.values())]
            case FindRoom(name):
                entry = self._rooms.get(fold(name))
                return None if entry is None else Room(entry.name, entry.actor, entry.json)
            case RoomGaveUp(room):
                key = fold(room.name.removeprefix("room:"))
                if key in self._rooms and self._rooms[key].actor == room:
                    self._drop(self._rooms[key])
                    log.warning("event=room_given_up room=%s rooms=%d", logfmt.value(room.name),
                                len(self._rooms))
            case ForgetRooms():
                rooms = list(self._rooms.values())
                for entry in rooms:
                    self._forget(entry, None)
                self.run = resume.new_run("m")  # old positions now read as another run's
                self._hub.tell(resume.StartAt(self.run, (self._seq, 0)))
                return len(rooms)
            case _:
                unexpected: Never = message  # mypy fails here if a RegistryMessage has no case above
                raise TypeError(f"registry cannot handle {unexpected!r}")
        return None  # a tell: nobody waits for an answer

    def _post(self, draft: Draft, username: str, address: str) -> None:
        key = fold(draft.room)
        entry = self._rooms.get(key)
        if entry is not None and not entry.actor.alive:  # given up on, and not forgotten yet
            self._drop(entry)
            entry = None
        if entry is None:
            entry = self._create(key, draft.room, address)
        else:
            self._rooms.move_to_end(key)
            self._shares.touched(entry.creator, entry)
        self._seq += 1
        posted = Message(entry.name, self._stamp(), username, draft.text, draft.id,
                         (self._seq, 0), f"{self.run}{resume.SEPARATOR}{self._seq}")
        entry.json = room_json(entry.name, posted)
        self._listing = None
        full = len(entry.held) >= self._max_messages  # the room's oldest message goes
        entry.actor.tell(Append(posted, drop_oldest=full))
        self._hub.tell(Deliver(posted))
        self._hold(entry, posted, address, full)

    def _hold(self, entry: _Entry, posted: Message, address: str, full: bool) -> None:
        """Count the new message; let go of what the budgets no longer have room for."""
        held = Held(posted, entry, address, len(posted.json))
        if full:
            self._shares.release(entry.held.popleft())
        entry.held.append(held)
        over = self._shares.hold(held)
        if not over:
            return
        dropped: dict[_Entry, list[Held[_Entry]]] = {}
        for gone in over:
            dropped.setdefault(gone.room, []).append(gone)
        for room, gone_ones in dropped.items():
            self.forgotten_messages += len(gone_ones)
            for gone in gone_ones:
                room.held.remove(gone)
            if not room.held:
                self._forget(room, "history_bytes")
                continue
            room.actor.tell(Drop(tuple(gone.message for gone in gone_ones)))
            room.json = room_json(room.name, room.held[-1].message)
            self._listing = None

    def _forget(self, entry: _Entry, why: str | None) -> None:
        """Forget a whole room: it disappears from /api/rooms and its actor stops."""
        self._drop(entry)
        entry.actor.stop()
        if why is not None:
            self.forgotten += 1
            log.info("event=room_forgotten room=%s rooms=%d why=%s", logfmt.value(entry.name),
                     len(self._rooms), why)

    def _drop(self, entry: _Entry) -> None:
        """The room is gone from the list, and its messages from the budgets."""
        del self._rooms[entry.key]
        self._shares.forgotten(entry.creator, entry)
        for held in entry.held:
            self._shares.release(held)
        entry.held.clear()
        self._listing = None

    def _create(self, key: str, name: str, creator: str) -> _Entry:
        idlest = self._shares.room_to_forget(creator)
        if idlest is not None:
            self._forget(idlest, "max_rooms")
        room = RoomActor(name).start(self._supervisor)
        entry = self._rooms[key] = _Entry(key, name, room, creator)
        self._shares.created(creator, entry)
        return entry

    def _stamp(self) -> str:
        return format_created(self._clock.stamp())

    def _gave_up(self, room: ActorRef) -> None:
        try:
            self.ref.tell(RoomGaveUp(room))
        except ActorError:
            pass  # the registry is stopping or swamped: the next post finds the room dead

    def on_stop(self, reason: object) -> None:
        for entry in self._rooms.values():
            entry.actor.stop()

    def describe(self) -> dict:
        return {"rooms": len(self._rooms), "forgotten": self.forgotten,
                "history_bytes": self._shares.bytes.total,
                "forgotten_messages": self.forgotten_messages}


def fold(name: str) -> str:
    """Room names match whatever their case."""
    return name.lower()


def room_json(name: str, last_message: Message) -> bytes:
    """A room object: `{"name", "last_message"}`, the message without its `id`."""
    return (b'{"name":' + json.dumps(name, ensure_ascii=False).encode()
            + b',"last_message":' + last_message.summary + b"}")
