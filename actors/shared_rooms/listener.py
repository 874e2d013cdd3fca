"""Listener: this process's reader of the shared message stream, and its sequencer.

Every process — the one a message was posted through included — delivers a
message only when it reads it from the Redis stream, so every process delivers
the same messages in the same order: the order in which `store_post.lua`
stored them. The listener hands each one to the hub, which fans it out to this
process's sessions exactly as in the single-process server.

A stream, unlike pub/sub, can be read again: the listener remembers the last
id it read, and when its connection drops (Redis restarted, a network blip,
`CLIENT KILL`) it reconnects with exponential backoff and reads on from that
id, so this process's clients miss nothing that was stored meanwhile. While
the link is down the store refuses work; websockets stay open.

Being the one that hands messages to the hub, the listener is also where a
`?v=2&since=` client resumes (see actors/chat/resume.py): between two reads it
replays the stream after the client's position into the session's outbox and
then joins the session to the hub, so the live stream starts right after the
last replayed message, whichever process the client saw it on.

A Redis that restarted empty has a new run id (`RedisStore.open_reader`): the
listener then reads the new stream from its start, and positions from before
are answered with `gone`, as after a server restart.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque

import gevent
from gevent.event import Event
from redis.exceptions import RedisError

from actors.chat import resume
from actors.chat.hub import Deliver
from actors.chat.message import Message
from actors.chat.resume import Resume
from actors.runtime.actor import ActorRef
from actors.shared_rooms.store import STREAM_ID, RedisStore

log = logging.getLogger("nane.redis")

FIRST_BACKOFF = 0.05  # seconds before the first reconnect attempt
MAX_BACKOFF = 2.0  # the backoff doubles up to this
AHEAD_WAIT = 5.0  # seconds a position read on another process may wait for this one to catch up


class Listener:
    """A supervised-by-itself greenlet: read, deliver, serve resumes, and on any failure reconnect.

    It is not an actor because its input is the Redis stream; the resumes the
    registry hands it wait in a queue it serves between two reads.

    Args:
        store: owns the Redis connections and the link state.
        hub: where each message goes.
    """

    def __init__(self, store: RedisStore, hub: ActorRef):
        self._store = store
        self._hub = hub
        self._greenlet: gevent.Greenlet | None = None
        self._subscribed = Event()
        self._stopping = False
        self._resumes: deque[tuple[Resume, float]] = deque()  # bounded by connections
        self.run: str | None = None  # the Redis data set's run id
        self._last_id = "0-0"  # the last stream id handed to the hub
        self._last_count = 0  # its activity count (0: none read yet)
        self.missed = 0  # messages trimmed from the stream before this process read them
        self.received = 0
        self.reconnects = 0

    def start(self) -> Listener:
        self._greenlet = gevent.spawn(self._run)
        self._greenlet.name = "redis-listener"
        return self

    def wait_subscribed(self, timeout: float) -> bool:
        """Wait until the first read is possible; False if it is not after `timeout` s."""
        return self._subscribed.wait(timeout)

    def resume(self, request: Resume) -> None:
        """Serve `request` between two reads (any greenlet may call this)."""
        self._resumes.append((request, time.monotonic() + AHEAD_WAIT))

    def stop(self) -> None:
        self._stopping = True
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=2)

    @property
    def position(self) -> str:
        return f"{self.run}{resume.SEPARATOR}{self._last_id}"

    def _run(self) -> None:
        backoff = FIRST_BACKOFF
        while not self._stopping:
            try:
                self._open()
                backoff = FIRST_BACKOFF
                self._read_forever()
            except (RedisError, OSError) as error:
                self._store.disconnected(error)
            except Exception as error:  # a bug here must not end delivery for good
                log.exception("event=listener_failed")
                self._store.disconnected(error)
            self._refuse_resumes()
            self.reconnects += 1
            gevent.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _open(self) -> None:
        run = self._store.open_reader()
        if self.run is None:  # this process starts: deliver what comes from now on
            self._last_id = self._store.last_id()
        elif run != self.run:  # Redis lost its data: all of the new stream is new
            log.warning("event=redis_data_lost old_run=%s new_run=%s", self.run, run)
            self._last_id, self._last_count = "0-0", 0
        self.run = run
        self._store.connected()
        self._subscribed.set()

    def _read_forever(self) -> None:
        hub = self._hub
        while True:
            for id, raw, count in self._store.read(self._last_id):
                if self._last_count and count > self._last_count + 1:
                    self._missed(count - self._last_count - 1)
                self._last_count = count
                self.received += 1
                hub.tell(Deliver(Message.from_json(raw, f"{self.run}{resume.SEPARATOR}{id}")))
                self._last_id = id
            if self._resumes:
                self._serve_resumes()

    def _missed(self, missed: int) -> None:
        """This process fell further behind than the stream keeps: say so, loudly, once per gap.

        Its clients did not get those messages; a `?v=2` client resuming from
        before them is told `gone` (its position is no longer in the stream).
        """
        self.missed += missed
        log.error("event=stream_gap missed=%d after=%s (raise redis_stream_messages)",
                  missed, self._last_id)

    def _serve_resumes(self) -> None:
        waiting = []
        try:
            while self._resumes:
                request, deadline = self._resumes[0]
                answer = self._replay(request, deadline)  # may raise: the request stays queued
                self._resumes.popleft()
                if answer is None:
                    waiting.append((request, deadline))
                    continue
                replay, gone = answer
                resume.answer(request.session, self._hub, replay, gone, self.position)
        finally:
            self._resumes.extend(waiting)

    def _replay(self, request: Resume, deadline: float):
        """(messages, None) or ([], why not); None: not yet, this process is behind the position."""
        if not request.since:
            return [], None
        position = resume.parse(request.since)
        if position is None or not STREAM_ID.match(position.offset):
            return [], resume.NOT_A_POSITION
        if position.run != self.run:
            return [], resume.OTHER_RUN
        since = _id(position.offset)
        if since > _id(self._last_id):  # seen on a process that has read further than this one
            return None if time.monotonic() < deadline else ([], resume.NOT_A_POSITION)
        if since == _id(self._last_id):
            return [], None
        entries, complete = self._store.replay(position.offset, self._last_id,
                                               request.max_replay)
        if not complete:
            return [], resume.TOO_OLD
        if len(entries) > request.max_replay:
            return [], resume.TOO_MANY
        return [Message.from_json(raw, f"{self.run}{resume.SEPARATOR}{id}")
                for id, raw in entries], None

    def _refuse_resumes(self) -> None:
        """While Redis is unreachable nothing can be replayed: say so, and join the sessions."""
        while self._resumes:
            request, _ = self._resumes.popleft()
            resume.answer(request.session, self._hub, [], resume.UNAVAILABLE, self.position)


def _id(stream_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = stream_id.partition("-")
    return int(milliseconds), int(sequence)
