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

A `?v=2&since=` client resumes from the hub's replay window, as in memory
(actors/chat/resume.py). When the listener first reads a data set it hands the
hub the stream's last messages with `StartAt`, so a process that just started
can replay to a client what that client saw on another process. A Redis that
restarted empty has a new run id (`RedisStore.open_reader`): the listener then
reads the new stream from its start and starts the hub on the new run, and
positions from before are answered with `gone`, as after a server restart.
"""

from __future__ import annotations

import logging
import random

import gevent
from gevent.event import Event
from redis.exceptions import RedisError

from actors import logfmt
from actors.chat.hub import Deliver
from actors.chat.message import Message
from actors.chat.resume import Offset, StartAt, position_text
from actors.runtime.actor import ActorRef
from actors.shared_rooms.store import RedisStore

log = logging.getLogger("nane.redis")

FIRST_BACKOFF = 0.05  # seconds before the first reconnect attempt
MAX_BACKOFF = 2.0  # the backoff doubles up to this
AHEAD_WAIT = 5.0  # seconds a position read on another process may wait for this one to catch up


class Listener:
    """A supervised-by-itself greenlet: read, deliver, and on any failure reconnect.

    It is not an actor because its input is the Redis stream.

    Args:
        store: owns the Redis connections and the link state.
        hub: where each message goes.
        window: how many of the stream's last messages the hub starts with.
    """

    def __init__(self, store: RedisStore, hub: ActorRef, window: int):
        self._store = store
        self._hub = hub
        self._window = window
        self._greenlet: gevent.Greenlet | None = None
        self._subscribed = Event()
        self._stopping = False
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

    def stop(self) -> None:
        self._stopping = True
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=2)

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
            self.reconnects += 1
            gevent.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _open(self) -> None:
        run = self._store.open_reader()
        if self.run is None:  # this process starts: deliver what comes from now on
            self._start(run, self._store.last_id())
        elif run != self.run:  # Redis lost its data: all of the new stream is new
            log.warning("event=redis_data_lost old_run=%s new_run=%s", logfmt.value(self.run or ""),
                        logfmt.value(run))
            self._last_count = 0
            self._start(run, "0-0")
        self.run = run
        self._store.connected()
        self._subscribed.set()

    def _start(self, run: str, last_id: str) -> None:
        """Start the hub on `run` at `last_id`, with the stream's last messages for its replays."""
        recent, complete = self._store.recent(last_id, self._window + 1)
        self._hub.tell(StartAt(run, _id(last_id), stream_ids=True, complete=complete,
                               recent=tuple(self._message(run, id, raw) for id, raw in recent)))
        self._last_id = last_id

    @staticmethod
    def _message(run: str, stream_id: str, raw: bytes) -> Message:
        offset = _id(stream_id)
        return Message.from_json(raw, position_text(run, offset, stream_ids=True), offset)

    def _read_forever(self) -> None:
        hub, run = self._hub, self.run or ""
        while True:
            for id, raw, count in self._store.read(self._last_id):
                if self._last_count and count > self._last_count + 1:
                    self._missed(count - self._last_count - 1)
                self._last_count = count
                self.received += 1
                hub.tell(Deliver(self._message(run, id, raw)))
                self._last_id = id

    def _missed(self, missed: int) -> None:
        """This process fell further behind than the stream keeps: say so, loudly, once per gap.

        Its clients did not get those messages; a `?v=2` client resuming from
        before them is told `gone` (its position is no longer in the stream).
        """
        self.missed += missed
        log.error("event=stream_gap missed=%d after=%s hint=\"raise redis_stream_messages\"",
                  missed, self._last_id)


def _id(stream_id: str) -> Offset:
    milliseconds, _, sequence = stream_id.partition("-")
    return int(milliseconds), int(sequence)
