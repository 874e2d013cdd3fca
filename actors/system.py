"""The chat as a whole: start the actors, wire them together, hand out their references."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from actors.chat.hub import HubActor
from actors.chat.kozma import KozmaActor
from actors.chat.registry import RegistryActor
from actors.runtime.actor import ActorRef
from actors.runtime.supervisor import Supervisor

if TYPE_CHECKING:  # the Redis modules load only when Redis is configured
    from actors.shared_rooms.listener import Listener
    from actors.shared_rooms.store import RedisStore

FIRST_SUBSCRIBE_TIMEOUT = 10.0  # seconds a starting process waits for Redis before serving anyway


@dataclass(frozen=True)
class Chat:
    """The long-lived actors every connection and request talks to."""

    registry: ActorRef
    hub: ActorRef
    kozma: ActorRef | None
    directory: ActorRef  # answers ListRooms, FindRoom, ListRoomActors: the registry in memory
    listener: Listener | None = None  # only when rooms are shared through Redis
    store: RedisStore | None = None

    def stop(self, seconds: float = 2.0) -> None:
        """Stop the bot, then the sequencer once its backlog is handed on, then the hub."""
        if self.listener is not None:
            self.listener.stop()
        for actor in (self.kozma, self.registry, self.directory, self.hub):
            if actor is not None:
                actor.stop()
                if actor is not self.hub:
                    actor.join(timeout=seconds)
        if self.store is not None:
            self.store.close()


def start_chat(max_rooms: int, max_messages_in_room: int, kozma: bool = False,
               kozma_first_delay: float = 5.0, kozma_max_pause: float = 60.0,
               keepalive_tick: float | None = None,
               observe_fan_out: Callable[[float], None] | None = None,
               redis_url: str = "", redis_stream_messages: int | None = None,
               max_history_bytes: int = 1 << 62,
               max_history_bytes_per_address: int = 1 << 62,
               max_rooms_per_address: int = 1 << 62,
               replay_messages: int = 4095, replay_bytes: int = 4 << 20) -> Chat:
    """Start the hub, the registry and (optionally) the bot under one supervisor.

    `keepalive_tick`: seconds between the hub's `KeepAlive` rounds (sessions ping
    their peers on them); `observe_fan_out` receives each message's fan-out time.
    With `redis_url` the rooms are the ones every process on that Redis shares:
    the registry is the shared one, and a listener delivers what the Redis
    stream holds (about its last `redis_stream_messages`, which is how far
    back a `?v=2` client can resume). Start waits (boundedly) for the first read, so a
    process that answers HTTP is normally ready to take posts.
    `max_history_bytes` bounds the histories together; one client address's
    messages may hold `max_history_bytes_per_address` of it, and the rooms it
    created `max_rooms_per_address` of `max_rooms`. The hub keeps the last
    `replay_messages` messages (at most `replay_bytes` of them) for resuming
    clients; with Redis no more than the stream keeps, so every process can
    replay as far back as any other.
    """
    supervisor = Supervisor("chat")
    listener = store = None
    if redis_url:
        from actors.shared_rooms.listener import AHEAD_WAIT, Listener
        from actors.shared_rooms.shared import SharedDirectoryActor, SharedRegistryActor
        from actors.shared_rooms.store import STREAM_MESSAGES, RedisStore

        stream_messages = redis_stream_messages or STREAM_MESSAGES
        replay_messages = min(replay_messages, stream_messages)
        hub = HubActor(keepalive_tick, observe_fan_out, replay_messages, replay_bytes,
                       wait_ahead=AHEAD_WAIT).start(supervisor)
        store = RedisStore(redis_url, max_messages_in_room, max_rooms,
                           stream_messages=stream_messages,
                           max_history_bytes=max_history_bytes,
                           max_history_bytes_per_address=max_history_bytes_per_address,
                           max_rooms_per_address=max_rooms_per_address)
        listener = Listener(store, hub, replay_messages)
        registry = SharedRegistryActor(store).start(supervisor)
        directory = SharedDirectoryActor(store, max_rooms).start(supervisor)
        listener.start()
        listener.wait_subscribed(FIRST_SUBSCRIBE_TIMEOUT)
    else:
        hub = HubActor(keepalive_tick, observe_fan_out, replay_messages,
                       replay_bytes).start(supervisor)
        registry = RegistryActor(hub, max_rooms, max_messages_in_room, max_history_bytes,
                                 max_history_bytes_per_address,
                                 max_rooms_per_address).start(supervisor)
        directory = registry
    bot = None
    if kozma:
        bot = KozmaActor(registry, kozma_first_delay, kozma_max_pause).start(supervisor)
    return Chat(registry=registry, hub=hub, kozma=bot, directory=directory, listener=listener,
                store=store)
