"""RegistryActor: the directory of rooms — find a room by name, create it on its first message."""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

from actors.chat import resume
from actors.chat.hub import Deliver
from actors.chat.message import Draft, Message, encode_list, format_created
from actors.chat.room import Append, Forget, MessagesAfter, RoomActor
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
    __slots__ = ("name", "actor", "json", "sizes", "bytes", "seq")

    def __init__(self, name: str, actor: ActorRef):
        self.name = name
        self.actor = actor
        self.json = b""
        self.sizes: list[int] = []  # its messages' sizes, oldest first (a list: a deque's block is 0.5 KiB)
        self.bytes = 0
        self.seq = 0  # of its last message


class RegistryActor(Actor):
    """Owns the name -> room mapping, each room's first spelling and last message.

    Lookup ignores case; a room keeps the spelling of its first message. The
    registry is also the sequencer: it stamps every message with `created` and
    hands it to the room (to keep) and to the hub (to deliver) in that order,
    so stamps are unique and increasing, and every connection receives all
    messages in one order — each sender's in the order sent, across rooms. At most `max_rooms`
    rooms live at once; the least recently active one is forgotten first.

    The histories together keep to `max_history_bytes` (each message counted
    by its JSON): the registry mirrors the size of every message each room
    holds, and past the budget it forgets the least recently active rooms,
    then the oldest messages of the room just written to (never its newest).

    Being the sequencer, it also numbers messages (their positions, see
    actors/chat/resume.py) and serves `Resume`: the replay goes into the session's
    outbox and the `Join` to the hub, between two posts, so the live stream
    starts right after the last replayed message.

    Args:
        hub: the fan-out to every connection.
        max_rooms: how many rooms may exist.
        max_messages_in_room: each room's history length.
        max_history_bytes: bytes of messages all rooms keep together.
    """

    kind = "registry"

    def __init__(self, hub: ActorRef, max_rooms: int, max_messages_in_room: int,
                 max_history_bytes: int = 1 << 62):
        super().__init__("registry", mailbox_limit=MAX_WAITING_POSTS)
        self._max_history_bytes = max_history_bytes
        self.history_bytes = 0
        self._hub = hub
        self._max_rooms = max_rooms
        self._max_messages = max_messages_in_room
        self._rooms: OrderedDict[str, _Entry] = OrderedDict()  # least recently active first
        self._rooms_body: bytes | None = None
        self._last_created = 0
        self.run = resume.new_run("m")
        self._seq = 0  # the last message's place in the one order
        self._forgotten_through = 0  # the newest message of any forgotten room
        self._supervisor = Supervisor("rooms", on_give_up=self._gave_up)
        self.forgotten = 0
        self.forgotten_messages = 0

    def receive(self, message):
        match message:
            case Post(draft, username):
                self._post(draft, username)
            case resume.Resume(session, since, max_replay):
                self._resume(session, since, max_replay)
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
                    self._drop(self._rooms[key])
                    log.warning("event=room_given_up room=%r rooms=%d", room.name, len(self._rooms))
            case ForgetRooms():
                rooms, self._rooms = self._rooms, OrderedDict()
                self._rooms_body = None
                self.history_bytes = 0
                self.run = resume.new_run("m")  # old positions now read as another run's
                self._forgotten_through = self._seq
                for entry in rooms.values():
                    entry.actor.stop()
                return len(rooms)
            case _:
                raise TypeError(f"registry cannot handle {message!r}")

    def _post(self, draft: Draft, username: str) -> None:
        key = fold(draft.room)
        entry = self._rooms.get(key)
        if entry is not None and not entry.actor.alive:  # given up on, and not forgotten yet
            self._drop(entry)
            entry = None
        if entry is None:
            entry = self._create(key, draft.room)
        else:
            self._rooms.move_to_end(key)
        self._seq += 1
        posted = Message(entry.name, self._stamp(), username, draft.text, draft.id,
                         self._seq, f"{self.run}{resume.SEPARATOR}{self._seq}")
        posted.previous_seq = entry.seq
        entry.seq = self._seq
        entry.json = room_json(entry.name, posted)
        self._rooms_body = None
        entry.actor.tell(Append(posted))
        self._hub.tell(Deliver(posted))
        self._count(entry, len(posted.json))

    def _count(self, entry: _Entry, size: int) -> None:
        """Mirror the room's history sizes; keep every room together within the byte budget."""
        entry.sizes.append(size)
        entry.bytes += size
        self.history_bytes += size
        if len(entry.sizes) > self._max_messages:  # the room dropped its oldest itself
            self._uncount(entry, 1)
        while self.history_bytes > self._max_history_bytes:
            idlest = next(iter(self._rooms.values()))
            if idlest is not entry:
                self._forget(idlest, "history_bytes")
                continue
            count, excess = 0, self.history_bytes - self._max_history_bytes
            while excess > 0 and count < len(entry.sizes) - 1:
                excess -= entry.sizes[count]
                count += 1
            if not count:
                break
            self._uncount(entry, count)
            entry.actor.tell(Forget(count))
            self.forgotten_messages += count
            break

    def _uncount(self, entry: _Entry, count: int) -> None:
        for _ in range(count):
            size = entry.sizes.pop(0)
            entry.bytes -= size
            self.history_bytes -= size

    def _forget(self, entry: _Entry, why: str) -> None:
        """Forget a whole room: it disappears from /api/rooms and its actor stops."""
        self._drop(entry)
        entry.actor.stop()
        self.forgotten += 1
        log.info("event=room_forgotten room=%r rooms=%d why=%s", entry.name, len(self._rooms),
                 why)

    def _drop(self, entry: _Entry) -> None:
        """The room is gone from the list; its messages leave the byte count and the replay."""
        del self._rooms[fold(entry.name)]
        self.history_bytes -= entry.bytes
        self._forgotten_through = max(self._forgotten_through, entry.seq)
        self._rooms_body = None

    def _create(self, key: str, name: str) -> _Entry:
        if len(self._rooms) >= self._max_rooms:
            self._forget(next(iter(self._rooms.values())), "max_rooms")
        room = RoomActor(name, self._max_messages).start(self._supervisor)
        entry = self._rooms[key] = _Entry(name, room)
        return entry

    def _resume(self, session: ActorRef, since: str, max_replay: int) -> None:
        """Replay what came after `since` into the session's outbox, then join it to the hub."""
        replay, gone = self._replay(since, max_replay) if since else ([], None)
        resume.answer(session, self._hub, replay, gone, f"{self.run}{resume.SEPARATOR}{self._seq}")

    def _replay(self, since: str, max_replay: int) -> tuple[list[Message], str | None]:
        """Every message after `since` in order, or why they cannot all be given."""
        position = resume.parse(since)
        if position is None or not position.offset.isdigit():
            return [], resume.NOT_A_POSITION
        if position.run != self.run:
            return [], resume.OTHER_RUN
        seq = int(position.offset)
        if seq > self._seq:
            return [], resume.NOT_A_POSITION
        if seq < self._forgotten_through:
            return [], resume.TOO_OLD
        if self._seq - seq > max_replay:  # every message after it is one to replay
            return [], resume.TOO_MANY
        replay: list[Message] = []
        for entry in self._rooms.values():
            if entry.seq <= seq:
                continue
            try:  # the room has had every Append we sent it: its answer is up to date
                newer, complete = entry.actor.ask(MessagesAfter(seq))
            except ActorError:
                return [], resume.UNAVAILABLE
            if not complete:
                return [], resume.TOO_OLD
            replay.extend(newer)
            if len(replay) > max_replay:
                return [], resume.TOO_MANY
        replay.sort(key=lambda m: m.seq)
        return replay, None

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

    def describe(self) -> dict:
        return {"rooms": len(self._rooms), "forgotten": self.forgotten,
                "history_bytes": self.history_bytes,
                "forgotten_messages": self.forgotten_messages}


def fold(name: str) -> str:
    """Room names match whatever their case."""
    return name.lower()


def room_json(name: str, last_message: Message) -> bytes:
    """A room object: `{"name", "last_message"}`, the message without its `id`."""
    return (b'{"name":' + json.dumps(name, ensure_ascii=False).encode()
            + b',"last_message":' + last_message.summary + b"}")
