"""The registry and rooms of a server whose rooms are shared with other processes through Redis.

They answer the same messages as `registry.RegistryActor` and `room.RoomActor`
(`Post`, `ListRooms`, `FindRoom`, `ListRoomActors`, `GetHistory`), so the
websocket and HTTP layers cannot tell the difference. What changes is where
the state lives: in Redis (`store.RedisStore`), not in the actors, and who
hands messages to the hub: not the registry but the listener, for every
process alike, when it reads them from the Redis stream.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from actors.chat.message import error_frame
from actors.chat.registry import MAX_WAITING_POSTS, FindRoom, ListRoomActors, ListRooms, Post, Room, fold
from actors.chat.room import GetHistory
from actors.runtime.actor import Actor, ActorError, ActorRef, ActorStopped, MailboxFull
from actors.runtime.supervisor import Supervisor
from actors.shared_rooms.store import RedisStore, StoreUnavailable

log = logging.getLogger("nane.registry")

NOT_DELIVERED = "message not delivered: chat storage (Redis) unreachable, send it again later"


class RoomGone(ActorError):
    """The room was forgotten (or Redis emptied) between finding it and reading it."""


class SharedRoomActor(Actor):
    """This process's door to one shared room: reads its history from Redis.

    Args:
        folded: the room's name in lower case (its key in Redis).
        store: the shared rooms.
    """

    kind = "room"

    def __init__(self, folded: str, store: RedisStore):
        super().__init__(f"room:{folded}")
        self.room = folded
        self._store = store

    def receive(self, message):
        match message:
            case GetHistory():
                body = self._store.history(self.room)
                if body is None:
                    raise RoomGone(f"room {self.room} not found")
                return body
            case _:
                raise TypeError(f"room cannot handle {message!r}")

    def describe(self) -> dict:
        return {"room": self.room}


class SharedRegistryActor(Actor):
    """Posts to the shared rooms, and finds them in Redis.

    The registry is this process's sequencer, as in the in-memory server: the
    posts waiting in its mailbox go to Redis as one pipeline, in the order they
    arrived, so Redis stores and publishes them in that order and each
    sender's messages reach everyone in the order sent, across rooms. It keeps
    at most `max_rooms` room actors for history reads, dropping the least
    recently used; which rooms exist is Redis's business (see `store_post.lua`,
    which forgets the idlest room past the limit for every process at once).

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
        self.published = 0
        self.failed = 0

    def receive(self, message):
        match message:
            case Post():
                self._publish([message, *self._pending()])
            case ListRooms():
                return self._store.rooms()
            case ListRoomActors():
                return list(reversed(self._rooms.values()))
            case FindRoom(name):
                key = fold(name)
                found = self._store.room(key)
                return found and Room(found.name, self._room(key), found.json)
            case _:
                raise TypeError(f"registry cannot handle {message!r}")

    def _publish(self, posts: list[Post]) -> None:
        try:
            results = self._store.post([(fold(p.draft.room), p.draft, p.username) for p in posts])
        except StoreUnavailable as error:
            results = [error] * len(posts)
        for post, result in zip(posts, results, strict=True):
            if isinstance(result, Exception):
                self.failed += 1
                if not isinstance(result, StoreUnavailable):
                    log.error("event=post_failed room=%r error=%r", post.draft.room, str(result))
                _tell_error(post.reply_to, NOT_DELIVERED, post.draft.id)
            else:
                self.published += 1

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

    def describe(self) -> dict:
        return {"rooms": len(self._rooms), "published": self.published, "failed": self.failed,
                "redis": "up" if self._store.link.up else "down"}


def _tell_error(session: ActorRef | None, problem: str, id: str | None) -> None:
    """An error frame for a poster that opted in to them; a gone session is no matter."""
    if session is not None:
        try:
            session.tell(error_frame(problem, id))
        except (MailboxFull, ActorStopped):
            pass
