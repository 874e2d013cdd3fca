"""Listener: this process's subscription to the shared message channel.

Every process — the one a message was posted through included — delivers a
message only when Redis publishes it, so every process delivers the same
messages in the same order: the order in which `store_post.lua` stored them.
The listener hands each one to the hub, which fans it out to this process's
sessions exactly as in the single-process server.

When the link breaks (Redis stopped, restarted, unreachable) the listener
tells the store, which refuses work until the link is back; it reconnects with
exponential backoff, resubscribes, and goes on. Websockets stay open meanwhile.
"""

from __future__ import annotations

import logging
import random

import gevent
from gevent.event import Event
from redis.exceptions import RedisError

from actors.actor import ActorRef
from actors.hub import Deliver
from actors.message import Message
from actors.store import HEALTH_CHECK_SECONDS, RedisStore

log = logging.getLogger("nane.redis")

FIRST_BACKOFF = 0.05  # seconds before the first reconnect attempt
MAX_BACKOFF = 2.0  # the backoff doubles up to this


class Listener:
    """A supervised-by-itself greenlet: subscribe, deliver, and on any failure reconnect.

    It is not an actor because nobody sends it messages: its input is the
    Redis subscription, and its only output is `Deliver` to the hub.

    Args:
        store: owns the Redis connections and the link state.
        hub: where each published message goes.
    """

    def __init__(self, store: RedisStore, hub: ActorRef):
        self._store = store
        self._hub = hub
        self._greenlet: gevent.Greenlet | None = None
        self._subscribed = Event()
        self._stopping = False
        self.received = 0
        self.reconnects = 0

    def start(self) -> "Listener":
        self._greenlet = gevent.spawn(self._run)
        self._greenlet.name = "redis-listener"
        return self

    def wait_subscribed(self, timeout: float) -> bool:
        """Wait until the first subscription is live; False if it is not after `timeout` s."""
        return self._subscribed.wait(timeout)

    def stop(self) -> None:
        self._stopping = True
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=2)

    def _run(self) -> None:
        backoff = FIRST_BACKOFF
        while not self._stopping:
            pubsub = None
            try:
                pubsub = self._store.subscribe()
                self._store.connected()
                self._subscribed.set()
                backoff = FIRST_BACKOFF
                self._listen(pubsub)
            except (RedisError, OSError) as error:
                self._store.disconnected(error)
            except Exception as error:  # a bug here must not end delivery for good
                log.exception("event=listener_failed")
                self._store.disconnected(error)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass
            self.reconnects += 1
            gevent.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _listen(self, pubsub) -> None:
        hub = self._hub
        while True:
            # the timeout lets redis-py ping an idle link, so a silent network failure shows too
            event = pubsub.get_message(ignore_subscribe_messages=True, timeout=HEALTH_CHECK_SECONDS)
            if event is not None and event["type"] == "message":
                self.received += 1
                hub.tell(Deliver(Message.from_json(event["data"])))
