"""RedisStore: the rooms every process shares, kept in Redis — the only code that speaks Redis.

With `redis_url` configured, the room actors keep nothing of their own: a
room's history, its first spelling, its last message and the room index live
in Redis, and every accepted message is appended to one stream that every
process reads (see `actors/shared_rooms/listener.py`). Python stamps and
encodes each message (actors/chat/message.py, as in memory); one Lua script
(`store_post.lua`) checks, stores, indexes, budgets and appends a batch of
them as one atomic step, so history and delivery can never disagree.

What Redis holds, under the key prefix (`nane:`):

    rooms                  zset   folded room name -> activity of its last message
    activity               string the counter: one more per message (its number `n`)
    last                   string the last `created` stored, in nanoseconds (20 digits)
    room:<folded>          hash   name (first spelling, JSON), creator (address), json (room object)
    messages:<folded>      zset   n -> message JSON: the room's last `max_messages_in_room`
    creators               zset   address -> rooms it created that are kept
    rooms_of:<address>     zset   folded name -> activity: the rooms it created
    holders                zset   address -> bytes of its messages kept
    total                  string bytes of every message kept
    messages_of:<address>  zset   n -> n: its messages kept, oldest first
    owners                 hash   n -> id bytes, address and room of every message kept
    stream                 stream every accepted message (field `m`; `n` its number), in the
                                  order it was stored; the last `stream_messages`, and no more
                                  than `max_history_bytes` of them (`streamed` counts them;
                                  trimmed once a little over, see store_post.lua)
    run                    string names this data set: a Redis that restarted empty gets a
                                  new one, so positions from before are recognised as gone

This process counts as connected to Redis exactly while its stream reader is
live (`Link`): only then does it accept posts and answer reads, so a message
it accepts is one its own clients will receive. An error reply to one command
(`redis.ResponseError`) is that command's failure, `StoreRefused`, never a
sign that the link is down.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.exceptions import NoScriptError, RedisError
from redis.retry import Retry

from actors import logfmt
from actors.chat.message import Message, encode_list
from actors.chat.resume import new_run

log = logging.getLogger("nane.redis")

PREFIX = "nane:"
CONNECT_TIMEOUT = 2.0  # seconds to open a connection to Redis
COMMAND_TIMEOUT = 3.0  # seconds a command may take; below the actors' 5 s ask timeout
HEALTH_CHECK_SECONDS = 5  # an idle reader pings Redis this often, to notice a dead link
STREAM_MESSAGES = 10_000  # the stream keeps about this many: how far back a client can resume
READ_BLOCK_MS = 200  # a read waits this long for new messages
READ_BATCH = 1000  # messages taken per read
READER_NAME = "nane-stream-reader"  # CLIENT LIST shows the reader's connection as this-<pid>
LIST_PAGE = 200  # rooms read per round trip while listing them: other commands run in between
POST_SCRIPT = (Path(__file__).with_name("store_post.lua")).read_text()
STAMP_DIGITS = 20  # `created` in nanoseconds as store_post.lua compares it


class StoreError(Exception):
    """A request to the shared rooms failed; `reason` is what the client is told."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class StoreUnavailable(StoreError):
    """Redis cannot be reached from this process; the request can be tried again later."""

    def __init__(self, reason: str = "chat storage (Redis) is unreachable, try again later"):
        super().__init__(reason)


class StoreRefused(StoreError):
    """Redis answered one command with an error: only that request failed, the link is up."""

    def __init__(self, error: str):
        super().__init__(f"chat storage (Redis) refused the request: {error}")


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message Python stamped and encoded, for `store_post.lua` to check and keep.

    `own_spelling`: `message.room` is the poster's own spelling, not one
    remembered from earlier, so it may become a new room's first spelling.
    """

    folded: str
    message: Message
    created: int  # nanoseconds, as stamped
    address: str
    own_spelling: bool


@dataclass(frozen=True, slots=True)
class Stored:
    """What `store_post.lua` did with a batch: it stored the first `count`, in order.

    `refused` is why it stopped at the next one ("" when it stored them all):
    "created" (`detail`: the data set's later stamp), "spelling" (`detail`: the
    room's first spelling, JSON), "new" (the room is gone: use the message's own
    spelling) or "error" (`detail`: Redis's error for that message, not stored).
    """

    count: int
    last_created: int
    refused: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class StoredRoom:
    """A room as Redis has it: its first spelling and its `/api/rooms/{name}` object."""

    name: str
    json: bytes


class Link:
    """Whether this process is connected to Redis, and one log line for each change.

    The subscriber decides (it is the one connection that must stay open);
    while it is down the store refuses work at once instead of piling up
    connection attempts, and `ready` lets a starting process wait for it.
    """

    def __init__(self, where: str):
        self.where = where
        self.up = False
        self._logged: bool | None = None  # the last state we logged; None: none yet
        self.transitions = 0

    def went_up(self) -> None:
        self.up = True
        if self._logged is not True:
            self._logged = True
            self.transitions += 1
            log.info("event=redis_up redis=%s", logfmt.value(self.where))

    def went_down(self, error: BaseException) -> None:
        self.up = False
        if self._logged is not False:
            self._logged = False
            self.transitions += 1
            log.warning("event=redis_down redis=%s error=%s", logfmt.value(self.where),
                        logfmt.value(str(error)))


class RedisStore:
    """The shared rooms: post, list, find, history — each one Redis round trip (a list: one a page).

    Args:
        url: `redis://` / `rediss://` / `unix://` URL.
        max_messages_in_room: each room's history length.
        max_rooms: rooms kept at once (see `store_post.lua` for who gives way).
        prefix: put before every key.
        stream_messages: how many messages the stream keeps for readers and resuming clients.
        max_history_bytes: bytes of messages every room keeps together (and the stream).
        max_history_bytes_per_address: one client address's share of them.
        max_rooms_per_address: rooms one client address may have created and kept.
    """

    def __init__(self, url: str, max_messages_in_room: int, max_rooms: int, prefix: str = PREFIX,
                 stream_messages: int = STREAM_MESSAGES, max_history_bytes: int = 1 << 62,
                 max_history_bytes_per_address: int = 1 << 62,
                 max_rooms_per_address: int = 1 << 62):
        self.prefix = prefix
        self.stream = prefix + "stream"
        self._run_key = prefix + "run"
        self.stream_messages = stream_messages
        self.max_messages_in_room = max_messages_in_room
        self.max_rooms = max_rooms
        self._limits = [prefix, max_messages_in_room, max_rooms, max_rooms_per_address,
                        max_history_bytes, max_history_bytes_per_address, stream_messages,
                        max_history_bytes]  # ARGV 1-8 of store_post.lua
        # No retries: a command that failed after it was sent may have run, and
        # running a post twice would deliver it twice.
        options = dict(retry=Retry(NoBackoff(), 0), socket_connect_timeout=CONNECT_TIMEOUT,
                       socket_keepalive=True)
        self._redis = redis.Redis.from_url(url, socket_timeout=COMMAND_TIMEOUT, **options)
        self._reader = redis.Redis.from_url(url, health_check_interval=HEALTH_CHECK_SECONDS,
                                            socket_timeout=HEALTH_CHECK_SECONDS * 2,
                                            client_name=f"{READER_NAME}-{os.getpid()}",
                                            **options)
        self.link = Link(redact(url))
        self._post_sha = ""
        self._keys = [prefix + key for key in ("rooms", "activity", "last", "creators", "holders",
                                               "total", "owners", "stream", "streamed")]

    # -- the stream reader (the listener's), which also drives the link ----------

    def open_reader(self) -> str:
        """Ready the reader: load the scripts, and answer this data set's run id.

        Raises:
            redis.RedisError, OSError: Redis cannot be reached.
        """
        # scripts are lost when Redis restarts: load them before accepting posts
        self._post_sha = self._reader.script_load(POST_SCRIPT)
        self._reader.set(self._run_key, new_run("r"), nx=True)
        run: bytes = self._reader.get(self._run_key)  # type: ignore[assignment]  # set just above
        return run.decode()

    def last_id(self) -> str:
        """The id of the newest message in the stream ("0-0" when there is none yet)."""
        try:
            return self._reader.xinfo_stream(self.stream)["last-generated-id"].decode()
        except redis.ResponseError:  # no such key: nothing was ever posted
            return "0-0"

    def read(self, after: str) -> list[tuple[str, bytes, int]]:
        """(stream id, message, count) after stream id `after`, oldest first.

        Waits up to READ_BLOCK_MS for some. `count` goes up by one per message
        posted, so a reader sees when the stream was trimmed past what it read.
        """
        answer: Any = self._reader.xread({self.stream: after}, count=READ_BATCH, block=READ_BLOCK_MS)
        if not answer:
            return []
        return [(id.decode(), fields[b"m"], int(fields.get(b"n", 0)))
                for id, fields in answer[0][1]]

    def recent(self, upto: str, count: int) -> tuple[list[tuple[str, bytes]], bool]:
        """The stream's last `count` messages up to id `upto`, oldest first, and whether
        they are all the stream ever had (nothing before them was trimmed)."""
        newest: Any = self._reader.xrevrange(self.stream, upto, "-", count=count)
        entries = [(id.decode(), fields[b"m"]) for id, fields in reversed(newest)]
        complete = False
        if len(entries) < count:
            try:
                info = self._reader.xinfo_stream(self.stream)
                complete = info["entries-added"] == info["length"]
            except redis.ResponseError:  # no such key: nothing was ever posted
                complete = True
        return entries, complete

    # -- the link, driven by the subscriber -----------------------------------

    def connected(self) -> None:
        """The reader is live: accept work."""
        self.link.went_up()

    def disconnected(self, error: BaseException) -> None:
        """The reader is gone: refuse work, and drop pooled connections that may be dead."""
        self.link.went_down(error)
        self._redis.connection_pool.disconnect(inuse_connections=False)
        self._reader.connection_pool.disconnect(inuse_connections=False)

    # -- the rooms ------------------------------------------------------------

    def post(self, batch: list[NewMessage]) -> Stored:
        """Store and publish messages in order, as one script call: one atomic step.

        Redis stores them in the order given, so a process's posts are
        published in the order it received them, whatever their rooms; the
        script stops at the first one it refuses (see `Stored`), and stores
        none after it.

        Raises:
            StoreUnavailable: Redis cannot be reached; none of them was stored
                (unless the link broke after Redis had run the script).
            StoreRefused: Redis refused the whole call; none of them was stored.
        """
        args: list = list(self._limits)
        for new in batch:
            message = new.message
            args += [new.folded, _json(message.room), "1" if new.own_spelling else "0",
                     f"{new.created:0{STAMP_DIGITS}d}", new.address.replace("\t", " "),
                     message.json, len(message.json) - len(message.summary)]

        def run() -> Any:
            try:
                return self._redis.evalsha(self._post_sha, len(self._keys), *self._keys, *args)
            except NoScriptError:  # Redis forgot it (SCRIPT FLUSH, a restart): nothing ran
                self._post_sha = self._redis.script_load(POST_SCRIPT)
                return self._redis.evalsha(self._post_sha, len(self._keys), *self._keys, *args)

        count, last, refused, detail = self._call(run)
        return Stored(int(count), int(last or 0), refused.decode(), detail.decode())

    def rooms(self) -> tuple[bytes, ...]:
        """Every room's object, most recently active room first.

        Read a page of rooms per round trip, so no single command holds Redis
        for long whatever the number of rooms (the room objects together are
        bounded by the byte budgets: each is a kept message and a name).
        """
        names = self._call(lambda: self._redis.zrevrange(self._keys[0], 0, -1))
        items: list[bytes] = []
        for start in range(0, len(names), LIST_PAGE):
            page = names[start:start + LIST_PAGE]

            def read(pipe: Pipeline, page: list[bytes] = page) -> None:
                for folded in page:
                    pipe.hget(self.prefix + "room:" + folded.decode(), "json")

            items += [item for item in self._pipeline(read)
                      if isinstance(item, bytes)]  # forgotten meanwhile, or not a room: left out
        return tuple(items)

    def room(self, folded: str) -> StoredRoom | None:
        """The room called `folded` (any case folded already), or None."""
        name, body = self._call(lambda: self._redis.hmget(self.prefix + "room:" + folded,
                                                          "name", "json"))
        if name is None or body is None:
            return None
        return StoredRoom(json.loads(name), body)

    def history(self, folded: str) -> bytes | None:
        """The `/history` body, oldest first, or None when there is no such room."""
        items = self._call(lambda: self._redis.zrange(self.prefix + "messages:" + folded, 0, -1))
        return encode_list(items) if items else None

    # -- plumbing ---------------------------------------------------------------

    def _pipeline(self, queue: Callable[[Pipeline], None]) -> list[Any]:
        """Send commands as one pipeline without MULTI; per-command errors come back as values."""
        def run() -> list[Any]:
            with self._redis.pipeline(transaction=False) as pipe:
                queue(pipe)
                return pipe.execute(raise_on_error=False)
        return self._call(run)

    def _call(self, command: Callable[[], Any]) -> Any:
        """Run `command` on a live link; an error reply is `StoreRefused`, a broken link
        `StoreUnavailable` (only the stream reader decides that the link is down).

        Answers Redis's reply as it came: its shape is the command's, which redis-py
        does not type (each caller reads the one it sent)."""
        if not self.link.up:
            raise StoreUnavailable()
        try:
            return command()
        except redis.ResponseError as error:
            raise StoreRefused(str(error)) from error
        except (RedisError, OSError) as error:
            raise StoreUnavailable() from error

    def ping(self) -> None:
        """Readiness: Redis answers a PING now (raises StoreUnavailable otherwise)."""
        self._call(self._redis.ping)

    def close(self) -> None:
        self._redis.close()
        self._reader.close()


def _json(text: str) -> str:
    """A JSON string, encoded as `actors/chat/message.py` encodes one."""
    return json.dumps(text, ensure_ascii=False)


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))
