"""RedisStore: the rooms every process shares, kept in Redis — the only code that speaks Redis.

With `redis_url` configured, the room actors keep nothing of their own: a
room's history, its first spelling, its last message and the room index live
in Redis, and every accepted message is appended to one stream that every
process reads (see `actors/shared_rooms/listener.py`). One Lua script (`store_post.lua`)
stamps, stores, indexes and appends a message as one atomic step, so history
and delivery can never disagree.

What Redis holds, under the key prefix (`nane:`):

    rooms             zset   folded room name -> last activity (a counter)
    activity          string the counter
    room:<folded>     hash   name (first spelling, JSON), sec/ns (last created), json (room object)
    history:<folded>  list   the last `max_messages_in_room` messages, oldest first, as JSON
    stream            stream every accepted message (field `m`; `n` its activity count),
                             in the order it was stored;
                             about the last `stream_messages` are kept
    run               string names this data set: a Redis that restarted empty gets a
                             new one, so positions from before are recognised as gone

This process counts as connected to Redis exactly while its stream reader is
live (`Link`): only then does it accept posts and answer reads, so a message
it accepts is one its own clients will receive.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError
from redis.retry import Retry

from actors.chat.message import Draft, encode_list
from actors.chat.resume import new_run

log = logging.getLogger("nane.redis")

PREFIX = "nane:"
CONNECT_TIMEOUT = 2.0  # seconds to open a connection to Redis
COMMAND_TIMEOUT = 3.0  # seconds a command may take; below the actors' 5 s ask timeout
HEALTH_CHECK_SECONDS = 5  # an idle reader pings Redis this often, to notice a dead link
STREAM_MESSAGES = 10_000  # the stream keeps about this many: how far back a client can resume
READ_BLOCK_MS = 200  # a read waits this long for new messages; resumes are served in between
READ_BATCH = 1000  # messages taken per read
READER_NAME = "nane-stream-reader"  # CLIENT LIST shows the reader's connection as this-<pid>
POST_SCRIPT = (Path(__file__).with_name("store_post.lua")).read_text()
ROOMS_SCRIPT = (Path(__file__).with_name("store_rooms.lua")).read_text()


class StoreUnavailable(Exception):
    """Redis cannot be reached from this process; the request can be tried again later."""

    def __init__(self, reason: str = "chat storage (Redis) is unreachable, try again later"):
        super().__init__(reason)
        self.reason = reason


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
            log.info("event=redis_up redis=%s", self.where)

    def went_down(self, error: BaseException) -> None:
        self.up = False
        if self._logged is not False:
            self._logged = False
            self.transitions += 1
            log.warning("event=redis_down redis=%s error=%r", self.where, str(error))


class RedisStore:
    """The shared rooms: post, list, find, history — each one Redis round trip.

    Args:
        url: `redis://` / `rediss://` / `unix://` URL.
        max_messages_in_room: each room's history length.
        max_rooms: rooms kept at once; a new room past it forgets the idlest.
        prefix: put before every key.
        stream_messages: about how many messages the stream keeps for resuming clients.
    """

    def __init__(self, url: str, max_messages_in_room: int, max_rooms: int, prefix: str = PREFIX,
                 stream_messages: int = STREAM_MESSAGES):
        self.prefix = prefix
        self.stream = prefix + "stream"
        self._run_key = prefix + "run"
        self.stream_messages = stream_messages
        self.max_messages_in_room = max_messages_in_room
        self.max_rooms = max_rooms
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
        self._post_sha = self._rooms_sha = ""
        self._keys = (prefix + "rooms", prefix + "activity")

    # -- the stream reader (the listener's), which also drives the link ----------

    def open_reader(self) -> str:
        """Ready the reader: load the scripts, and answer this data set's run id.

        Raises:
            redis.RedisError, OSError: Redis cannot be reached.
        """
        # scripts are lost when Redis restarts: load them before accepting posts
        self._post_sha = self._reader.script_load(POST_SCRIPT)
        self._rooms_sha = self._reader.script_load(ROOMS_SCRIPT)
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

    def post(self, posts: list[tuple[str, Draft, str]]) -> list[str | Exception]:
        """Store and publish messages — (folded room, draft, username) — in order, in one round trip.

        The commands go down one connection as one pipeline, so Redis runs the
        scripts in the order given: a process's posts are published in the
        order it received them, whatever their rooms.

        Returns, for each post, its `created` or the error that refused it.

        Raises:
            StoreUnavailable: Redis cannot be reached; none of them was delivered
                (unless the link broke after Redis had run some of them).
        """
        calls = [self._post_call(folded, draft, username) for folded, draft, username in posts]

        def queue(pipe):
            for keys, args in calls:
                pipe.evalsha(self._post_sha, len(keys), *keys, *args)

        results = self._pipeline(queue)
        if any(isinstance(result, NoScriptError) for result in results):
            # Redis forgot the script (SCRIPT FLUSH): the posts it refused did not
            # run, so posting them again, in order, is safe
            self._post_sha = self._call(lambda: self._redis.script_load(POST_SCRIPT))
            again = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
            retried = self._pipeline(lambda pipe: [
                pipe.evalsha(self._post_sha, len(calls[i][0]), *calls[i][0], *calls[i][1])
                for i in again])
            for i, result in zip(again, retried, strict=True):
                results[i] = result
        return [r.decode() if isinstance(r, bytes) else r for r in results]

    def _post_call(self, folded: str, draft: Draft, username: str) -> tuple[list, list]:
        """The KEYS and ARGV of `store_post.lua` for one message."""
        keys = [*self._keys, self.prefix + "room:" + folded, self.prefix + "history:" + folded,
                self.stream]
        args = [folded, _json(draft.room), _json(username), _json(draft.text),
                _json(draft.id) if draft.id else "", self.max_messages_in_room, self.max_rooms,
                self.stream_messages, self.prefix]
        return keys, args

    def rooms(self) -> bytes:
        """The `/api/rooms` body, most recently active room first."""
        def run():
            try:
                return self._redis.evalsha(self._rooms_sha, 1, self._keys[0], self.prefix)
            except NoScriptError:
                self._rooms_sha = self._redis.script_load(ROOMS_SCRIPT)
                return self._redis.evalsha(self._rooms_sha, 1, self._keys[0], self.prefix)
        items = self._call(run)
        return encode_list([item for item in items if item])

    def room(self, folded: str) -> StoredRoom | None:
        """The room called `folded` (any case folded already), or None."""
        name, body = self._call(lambda: self._redis.hmget(self.prefix + "room:" + folded,
                                                          "name", "json"))
        if name is None or body is None:
            return None
        return StoredRoom(json.loads(name), body)

    def history(self, folded: str) -> bytes | None:
        """The `/history` body, oldest first, or None when there is no such room."""
        items = self._call(lambda: self._redis.lrange(self.prefix + "history:" + folded, 0, -1))
        return encode_list(items) if items else None

    # -- plumbing ---------------------------------------------------------------

    def _pipeline(self, queue) -> list:
        """Send commands as one pipeline without MULTI; per-command errors come back as values."""
        def run():
            with self._redis.pipeline(transaction=False) as pipe:
                queue(pipe)
                return pipe.execute(raise_on_error=False)
        return self._call(run)

    def _call(self, command):
        if not self.link.up:
            raise StoreUnavailable()
        try:
            return command()
        except (RedisError, OSError) as error:
            if isinstance(error, redis.ResponseError):
                raise
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
