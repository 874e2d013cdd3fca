"""The registry and rooms of a server whose rooms are shared with other processes through Redis.

They answer the same messages as `registry.RegistryActor` and `room.RoomActor`
(`Post`, `ListRooms`, `FindRoom`, `GetHistory`), so the websocket and HTTP
layers cannot tell the difference. What changes is where the state lives: in
Redis (`store.RedisStore`), not in the actors. A room actor here is this
process's door to one shared room: it turns the posts waiting in its mailbox
into one pipelined round trip, and it does NOT hand messages to the hub —
the listener does that for every process alike, when Redis publishes them.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

from actors.actor import Actor, ActorError, ActorRef, ActorStopped, MailboxFull
from actors.message import Draft, error_frame
from actors.registry import MAX_WAITING_POSTS, FindRoom, ListRooms, Post, Room, fold
from actors.room import GetHistory
from actors.store import RedisStore, StoreUnavailable
from actors.supervisor import Supervisor

log = logging.getLogger("nane.registry")

NOT_DELIVERED = "message not delivered: chat storage (Redis) unreachable, send it again later"
BUSY = "server busy, message not accepted"


class RoomGone(ActorError):
    """The room was forgotten (or Redis was emptied) between finding it and reading it."""


@dataclass(frozen=True, slots=True)
class Publish:
    """Store `draft` in the shared room and publish it (tell)."""

    draft: Draft
    username: str
    reply_to: ActorRef | None


class SharedRoomActor(Actor):
    """Posts to one shared room, in the order its posts arrived here, and reads its history.

    Args:
        folded: the room's name in lower case (its key in Redis).
        store: the shared rooms.
    """

    kind = "room"

    def __init__(self, folded: str, store: RedisStore):
        super().__init__(f"room:{folded}", mailbox_limit=MAX_WAITING_POSTS)
        self.folded = folded
        self._store = store
        self.published = 0
        self.failed = 0

    def receive(self, message):
        match message:
            case Publish():
                self._publish([message, *self._pending()])
            case GetHistory():
                body = self._store.history(self.folded)
                if body is None:
                    raise RoomGone(f"room {self.folded} not found")
                return body
            case _:
                raise TypeError(f"room cannot handle {message!r}")

    def _publish(self, posts: list[Publish]) -> None:
        try:
            results = self._store.post(self.folded, [(p.draft, p.username) for p in posts])
        except StoreUnavailable as error:
            results = [error] * len(posts)
        for post, result in zip(posts, results):
            if isinstance(result, Exception):
                self.failed += 1
                if not isinstance(result, StoreUnavailable):
                    log.error("event=post_failed room=%r error=%r", self.folded, str(result))
                _tell_error(post.reply_to, NOT_DELIVERED, post.draft.id)
            else:
                self.published += 1

    def info(self) -> dict:
        return {"room": self.folded, "published": self.published, "failed": self.failed}


class SharedRegistryActor(Actor):
    """Finds the shared rooms in Redis, and keeps this process's room actors for them.

    Redis decides which rooms exist, their spelling and their order; this actor
    keeps at most `max_rooms` room actors of its own, and stops the least
    recently used one when it needs another (Redis forgets rooms by itself,
    see `store_post.lua`).

    Args:
        store: the shared rooms.
        max_rooms: room actors kept at once.
    """

    kind = "registry"

    def __init__(self, store: RedisStore, max_rooms: int):
        super().__init__("registry", mailbox_limit=MAX_WAITING_POSTS)
        self._store = store
        self._max_rooms = max_rooms
        self._rooms: OrderedDict[str, ActorRef] = OrderedDict()  # least recently used first
        self._supervisor = Supervisor("rooms")

    def receive(self, message):
        match message:
            case Post(draft, username, reply_to):
                try:
                    self._room(fold(draft.room)).tell(Publish(draft, username, reply_to))
                except (MailboxFull, ActorStopped):
                    _tell_error(reply_to, BUSY, draft.id)
            case ListRooms():
                return self._store.rooms()
            case FindRoom(name):
                key = fold(name)
                found = self._store.room(key)
                return found and Room(found.name, self._room(key), found.json)
            case _:
                raise TypeError(f"registry cannot handle {message!r}")

    def _room(self, key: str) -> ActorRef:
        room = self._rooms.get(key)
        if room is not None and room.alive:
            self._rooms.move_to_end(key)
            return room
        if len(self._rooms) >= self._max_rooms:
            _, idlest = self._rooms.popitem(last=False)
            idlest.stop()
        room = self._rooms[key] = SharedRoomActor(key, self._store).start(self._supervisor)
        return room

    def on_stop(self, reason) -> None:
        for room in self._rooms.values():
            room.stop()

    def info(self) -> dict:
        return {"rooms": len(self._rooms), "redis_up": self._store.link.up}


def _tell_error(session: ActorRef | None, problem: str, id: str | None) -> None:
    """An error frame for a poster that opted in to them; a gone session is no matter."""
    if session is not None:
        try:
            session.tell(error_frame(problem, id))
        except (MailboxFull, ActorStopped):
            pass
