"""The registry and rooms of a server whose rooms are shared with other processes through Redis.

Three kinds of actor answer the messages that `registry.RegistryActor` and
`room.RoomActor` answer in memory, so the websocket and HTTP layers cannot
tell the difference:

- `SharedRegistryActor`, the sequencer: it stamps and encodes each `Post`
  exactly as the in-memory registry does (`Clock`, `Message`) and hands the
  waiting posts to Redis as one script call, and does nothing slow;
- `SharedDirectoryActor` answers the questions about rooms (the list, one
  room), off the sequencer's turn, so a slow listing never holds up a post;
- `SharedRoomActor`, this process's door to one room's history.

What changes is where the state lives: in Redis (`store.RedisStore`), not in
the actors, and who hands messages to the hub: not the registry but the
listener, for every process alike, when it reads them from the Redis stream.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from typing import Never

from actors import logfmt
from actors.chat.message import Clock, Message, error_frame, format_created
from actors.chat.registry import (
    MAX_WAITING_POSTS,
    FindRoom,
    ListRoomActors,
    ListRooms,
    Post,
    Room,
    fold,
)
from actors.chat.room import GetHistory
from actors.runtime.actor import Actor, ActorError, ActorRef, ActorStopped, MailboxFull
from actors.runtime.supervisor import Supervisor
from actors.shared_rooms.store import (
    NewMessage,
    RedisStore,
    StoreError,
    StoreRefused,
    StoreUnavailable,
)

log = logging.getLogger("nane.registry")

NOT_DELIVERED = "message not delivered: chat storage (Redis) unreachable, send it again later"
SPELLINGS = 10_000  # rooms whose first spelling the registry remembers (the least recently used go)
MAX_REFUSALS = 100  # times Redis may send one batch back to be fixed before its rest fails
POSTS_PER_CALL = 256  # posts in one script call: Redis runs nothing else meanwhile
LIST_FRESH_SECONDS = 1.0  # a room list this old is served again instead of read again
DIRECTORY_MAILBOX = 1000  # questions waiting for the directory; more are answered "busy"


class RoomGone(ActorError):
    """The room was forgotten (or Redis emptied) between finding it and reading it."""


# The messages each actor here answers (besides the runtime's own `Probe` and `Describe`):
# the in-memory actors' own, as far as each one's part goes.
SharedRoomMessage = GetHistory
SharedRegistryMessage = Post
SharedDirectoryMessage = ListRooms | ListRoomActors | FindRoom


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

    def receive(self, message: SharedRoomMessage) -> bytes:
        match message:
            case GetHistory():
                body = self._store.history(self.room)
                if body is None:
                    raise RoomGone(f"room {self.room} not found")
                return body
            case _:
                unexpected: Never = message  # mypy fails here if a SharedRoomMessage has no case above
                raise TypeError(f"room cannot handle {unexpected!r}")

    def describe(self) -> dict:
        return {"room": self.room}


class SharedRegistryActor(Actor):
    """The sequencer of this process: stamps, encodes and stores posts, in the order they came.

    As in the in-memory server, the registry makes each message — its
    `created` from a `Clock`, its bytes from `Message` — and the posts waiting
    in its mailbox go to Redis as one script call (`store_post.lua`), so Redis
    stores and publishes them in that order and each sender's messages reach
    everyone in the order sent, across rooms. The script checks what it is
    given: a stamp not later than the data set's last (another process
    stamped later) or a room spelt otherwise than its first message sends the
    batch back from that message, to be stamped or encoded again; the
    registry remembers the rooms' first spellings (a bounded cache) so that
    seldom happens. Which rooms exist, and which are forgotten for the budgets,
    is Redis's business, decided there for every process at once.

    Only `Post`s are batched: a message of another kind ends the batch and
    has its own turn.

    Args:
        store: the shared rooms.
    """

    kind = "registry"

    def __init__(self, store: RedisStore):
        super().__init__("registry", mailbox_limit=MAX_WAITING_POSTS)
        self._store = store
        self._clock = Clock()
        self._spellings: OrderedDict[str, str] = OrderedDict()  # folded -> first spelling
        self.published = 0
        self.failed = 0
        self.refused = 0

    def receive(self, message: SharedRegistryMessage) -> None:
        match message:
            case Post():
                self._publish([message, *self._pending(Post)])
            case _:
                unexpected: Never = message  # mypy fails here if a SharedRegistryMessage has no case above
                raise TypeError(f"registry cannot handle {unexpected!r}")

    def _publish(self, posts: list[Post]) -> None:
        waiting = [(post, self._make(post)) for post in posts]
        refusals = 0
        while waiting:
            try:
                stored = self._store.post([new for _, new in waiting[:POSTS_PER_CALL]])
            except StoreError as error:
                self._fail(waiting, error)
                return
            self._clock.seen(stored.last_created)
            for _, new in waiting[:stored.count]:
                self._spell(new.folded, new.message.room)
            self.published += stored.count
            waiting = waiting[stored.count:]
            if not stored.refused:
                continue
            self.refused += 1
            refusals += 1
            first = waiting[0][1]
            if stored.refused == "spelling":
                self._spell(first.folded, json.loads(stored.detail))
            elif stored.refused == "new":
                self._spellings.pop(first.folded, None)
            elif stored.refused == "error":
                self._fail(waiting[:1], StoreRefused(stored.detail))
                waiting = waiting[1:]
            if refusals >= MAX_REFUSALS:
                self._fail(waiting, StoreRefused(f"refused {refusals} times ({stored.refused})"))
                return
            # stamped again past what Redis has, spelt as Redis has it: in the same order
            waiting = [(post, self._make(post)) for post, _ in waiting]

    def _make(self, post: Post) -> NewMessage:
        """The message as every receiver gets it: stamped now, in the room's known spelling."""
        draft = post.draft
        key = fold(draft.room)
        spelling = self._spellings.get(key, draft.room)
        created = self._clock.stamp()
        message = Message(spelling, format_created(created), post.username, draft.text, draft.id)
        return NewMessage(key, message, created, post.address, spelling == draft.room)

    def _spell(self, key: str, spelling: str) -> None:
        self._spellings[key] = spelling
        self._spellings.move_to_end(key)
        if len(self._spellings) > SPELLINGS:
            self._spellings.popitem(last=False)

    def _fail(self, waiting: list[tuple[Post, NewMessage]], error: StoreError) -> None:
        """Those posts were not stored: each poster that opted in hears so."""
        problem = NOT_DELIVERED
        if not isinstance(error, StoreUnavailable):
            log.error("event=post_failed posts=%d error=%s", len(waiting), logfmt.value(error.reason))
            problem = f"message not delivered: {error.reason}"
        for post, _ in waiting:
            self.failed += 1
            _tell_error(post.reply_to, problem, post.draft.id)

    def describe(self) -> dict:
        return {"published": self.published, "failed": self.failed, "refused": self.refused,
                "spellings": len(self._spellings),
                "redis": "up" if self._store.link.up else "down"}


class SharedDirectoryActor(Actor):
    """Answers what rooms there are — the list, one room — off the sequencer's turn.

    A room list is read from Redis at most once per `LIST_FRESH_SECONDS`:
    the asks that wait while one is read get that one, so however many
    clients poll `/api/rooms`, one list is read at a time and one is kept.
    It keeps at most `max_rooms` room actors for history reads, dropping the
    least recently used.

    Args:
        store: the shared rooms.
        max_rooms: room actors kept at once.
    """

    kind = "directory"

    def __init__(self, store: RedisStore, max_rooms: int):
        super().__init__("directory", mailbox_limit=DIRECTORY_MAILBOX)
        self._store = store
        self._max_rooms = max_rooms
        self._rooms: OrderedDict[str, ActorRef] = OrderedDict()  # least recently used first
        self._supervisor = Supervisor("rooms")
        self._list: tuple[bytes, ...] | None = None
        self._listed_at = 0.0
        self.lists_read = 0

    def receive(self, message: SharedDirectoryMessage) -> tuple[bytes, ...] | list[ActorRef] | Room | None:
        match message:
            case ListRooms():
                if self._list is None or time.monotonic() - self._listed_at > LIST_FRESH_SECONDS:
                    self._list = None  # not kept while the next one is read: one at a time
                    self._list = self._store.rooms()
                    self._listed_at = time.monotonic()
                    self.lists_read += 1
                return self._list
            case ListRoomActors():
                return list(reversed(self._rooms.values()))
            case FindRoom(name):
                key = fold(name)
                found = self._store.room(key)
                return None if found is None else Room(found.name, self._room(key), found.json)
            case _:
                unexpected: Never = message  # mypy fails here if a SharedDirectoryMessage has no case above
                raise TypeError(f"directory cannot handle {unexpected!r}")

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

    def on_stop(self, reason: object) -> None:
        for room in self._rooms.values():
            room.stop()

    def describe(self) -> dict:
        return {"rooms": len(self._rooms), "lists_read": self.lists_read,
                "list_bytes": len(self._list or b"")}


def _tell_error(session: ActorRef | None, problem: str, id: str | None) -> None:
    """An error frame for a poster that opted in to them; a gone session is no matter."""
    if session is not None:
        try:
            session.tell(error_frame(problem, id))
        except (MailboxFull, ActorStopped):
            pass
