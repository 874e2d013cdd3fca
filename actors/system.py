"""The chat's one door: start the actors, wire them together, and everything the app asks of them.

The app (HTTP, the websocket handshake, operations) holds one `Chat` and calls
its methods: `connect` runs a connection, `rooms`/`room`/`history` answer the
API, `ready`, `core_state` and `actors_view` serve operations, the fault
controls find, describe, disconnect and forget, and `stop_gracefully`/`stop`
end it. Which actor answers what, and with which message, stays behind it.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gevent

from actors import logfmt
from actors.chat import connection
from actors.chat.connection import (
    BY_CONTROL,
    DROP_KINDS,
    END_REASONS,
    ConnectionLimits,
)
from actors.chat.hub import DelayDelivery, DisconnectAll, DrainAll, HubActor, ListSessions
from actors.chat.kozma import KozmaActor
from actors.chat.message import encode_list
from actors.chat.registry import FindRoom, ForgetRooms, ListRoomActors, ListRooms, RegistryActor
from actors.chat.room import GetHistory
from actors.chat.session import GOING_AWAY, Disconnect, GoSilent
from actors.runtime.actor import ActorError, ActorRef, Describe, Probe, ask_all
from actors.runtime.supervisor import Supervisor
from actors.runtime.tracing import tracing

if TYPE_CHECKING:  # the Redis modules load only when Redis is configured
    from actors.shared_rooms.listener import Listener
    from actors.shared_rooms.store import RedisStore

__all__ = ["DROP_KINDS", "END_REASONS", "ActorError", "ActorRef", "Chat", "ConnectionLimits",
           "start_chat"]

log = logging.getLogger("nane.ops")

FIRST_SUBSCRIBE_TIMEOUT = 10.0  # seconds a starting process waits for Redis before serving anyway
RESTARTING = Disconnect(1001, BY_CONTROL + ": server restarting")
CLOSES = {"1000": Disconnect(1000, BY_CONTROL), "1001": Disconnect(1001, BY_CONTROL),
          "1011": Disconnect(1011, BY_CONTROL), "drop": Disconnect(1006, BY_CONTROL + ": drop")}


@dataclass(frozen=True, slots=True)
class CoreState:
    """What the hub and the registry say of themselves (None: no answer in time), and mailbox depths."""

    hub: dict[str, Any] | None
    registry: dict[str, Any] | None
    mailboxes: dict[str, int]


@dataclass(frozen=True, slots=True)
class ActorsView:
    """The actors for the actor view: their facts, at most `limit` rooms and as many sessions."""

    tracing: bool
    actors: list[dict[str, Any]]
    rooms_total: int
    sessions_total: int


@dataclass(eq=False)
class Chat:
    """The long-lived actors every connection and request talks to, behind a few methods."""

    registry: ActorRef
    hub: ActorRef
    kozma: ActorRef | None
    directory: ActorRef  # answers ListRooms, FindRoom, ListRoomActors: the registry in memory
    supervisor: Supervisor
    limits: ConnectionLimits
    listener: Listener | None = None  # only when rooms are shared through Redis
    store: RedisStore | None = None
    # the last listings asked for the actor view, and the last rooms body with what it joined
    _last_lists: dict[str, list[ActorRef]] = field(default_factory=dict, init=False, repr=False)
    _rooms_body: tuple[object, bytes] = field(default=((), b'{"result":[]}'), init=False,
                                              repr=False)

    DISCONNECT_KINDS = (*CLOSES, "silent")  # how the disconnect control may close a session

    # -- connections -----------------------------------------------------------

    # Serve one client on a transport until it is gone (actors/chat/connection.py): the
    # reader's own function, so no frame of the door's stays on every connection's stack.
    connect = connection.serve

    # -- the API ---------------------------------------------------------------

    def rooms(self) -> bytes:
        """`{"result": [...]}`: every room. The objects come from their owner; the body is
        joined here, outside its turn, once per change rather than per call."""
        listing = self.directory.ask(ListRooms())
        if self._rooms_body[0] is not listing:
            self._rooms_body = (listing, encode_list(listing))
        return self._rooms_body[1]

    def room(self, name: str) -> bytes | None:
        """`{"result": {...}}`: the room called `name`, or None when there is none."""
        found = self.directory.ask(FindRoom(name))
        return None if found is None else b'{"result":' + found.json + b"}"

    def history(self, name: str) -> bytes | None:
        """`{"result": [...]}`: the room's messages, oldest first, or None when there is no room."""
        found = self.directory.ask(FindRoom(name))
        if found is not None:
            try:
                body: bytes = found.actor.ask(GetHistory())
                return body
            except ActorError:
                pass  # forgotten between the two asks
        return None

    @property
    def storage_errors(self) -> tuple[type[Exception], ...]:
        """What a read of rooms shared through Redis raises while Redis cannot answer."""
        if self.store is None:
            return ()
        from actors.shared_rooms.store import StoreError

        return (StoreError,)

    # -- operations ------------------------------------------------------------

    def ready(self, timeout: float = 1.0) -> tuple[list[str], list[str]]:
        """The checks made (the actors answer; Redis answers) and those that failed, with why."""
        checks: dict[str, Callable[[], object]] = {
            "registry": lambda: self.registry.ask(Probe(), timeout=timeout),
            "hub": lambda: self.hub.ask(Probe(), timeout=timeout)}
        if self.store is not None:
            checks["redis"] = self.store.ping
        failed = []
        for name, check in checks.items():
            try:
                check()
            except Exception as error:  # a check that raises is a failed check
                failed.append(f"{name}: {type(error).__name__}")
        return sorted(checks), failed

    def core_state(self, seconds: float) -> CoreState:
        """The hub's and the registry's `Describe`, asked together, waited for at most `seconds`.

        A paused actor still answers; one that cannot in time is left out (None).
        Mailbox depths are the runtime's own count, read without a message.
        """
        described = ask_all([self.hub, self.registry], Describe(), seconds)
        mailboxes = {"hub": self.hub.mailbox_size, "registry": self.registry.mailbox_size}
        if self.kozma is not None:
            mailboxes["kozma"] = self.kozma.mailbox_size
        return CoreState(described.get(self.hub), described.get(self.registry), mailboxes)

    def look(self, trace_seconds: float) -> bool:
        """Somebody looks at the actors: trace for `trace_seconds` more. Was tracing on already?"""
        was_on = tracing.on
        tracing.watch(trace_seconds)
        return was_on

    def actors_view(self, limit: int, seconds: float) -> ActorsView:
        """Every actor with its counters and its answer to `Describe`, bounded by `limit`.

        At most `limit` rooms (the most recently active) and as many sessions
        (the oldest); each asked at once, waited for together at most `seconds`.
        """
        all_rooms = [r for r in self._last_list(self.directory, ListRoomActors(), seconds) if r.alive]
        all_sessions = [s for s in self._last_list(self.hub, ListSessions(), seconds) if s.alive]
        core = [self.registry, self.hub] + ([self.kozma] if self.kozma is not None else []) + (
            [self.directory] if self.directory != self.registry else [])
        rooms = all_rooms[:limit]
        sessions = heapq.nsmallest(limit, all_sessions, key=_session_number)
        described = ask_all([*core, *rooms, *sessions], Describe(), seconds)

        def facts_of(ref: ActorRef) -> dict[str, Any]:
            return {**ref.stats(), **described.get(ref, {})}

        listed = [facts_of(ref) for ref in core]
        for room in rooms:
            # Every message reaches every connection (docs/protocol.md), so a room's receivers
            # are all the hub's sessions: the registry hands each message to the hub too.
            listed.append({**facts_of(room), "subscribers": len(all_sessions)})
        for session in sessions:
            facts = facts_of(session)
            closed: Disconnect | None = facts.get("closed_with")
            listed.append({**facts, "outbox": facts["mailbox"],  # the mailbox is the outbox
                           "closed_with": None if closed is None else
                           {"code": closed.code, "reason": closed.reason}})
        return ActorsView(tracing.on, listed, len(all_rooms), len(all_sessions))

    def _last_list(self, actor: ActorRef, question: object, seconds: float) -> list[ActorRef]:
        """The actor's answer; while it is paused, slowed or swamped, the last one it gave."""
        if not actor.stats()["paused"]:
            try:
                self._last_lists[actor.name] = actor.ask(question, timeout=seconds)
            except ActorError:
                pass
        return self._last_lists.get(actor.name, [])

    # -- fault controls --------------------------------------------------------

    def find(self, name: str, seconds: float) -> ActorRef | None:
        """The live actor called `name` (registry, hub, kozma, room:NAME, session:N), if any."""
        found: ActorRef | None = None
        if name == "registry":
            found = self.registry
        elif name == "hub":
            found = self.hub
        elif name == "kozma":
            found = self.kozma
        elif name.startswith("room:"):
            room = self.directory.ask(FindRoom(name.removeprefix("room:")), timeout=seconds)
            found = room and room.actor
        elif name.startswith("session:"):
            sessions = self.hub.ask(ListSessions(), timeout=seconds)
            found = next((s for s in sessions if s.name == name), None)
        return found if found is not None and found.alive else None

    def describe(self, ref: ActorRef, seconds: float) -> dict[str, Any]:
        """The runtime's counters and the actor's answer to `Describe` (when it gives one in time)."""
        return {**ref.stats(), **ask_all([ref], Describe(), seconds).get(ref, {})}

    def core_crash_budget(self) -> tuple[float, int]:
        """(seconds, crashes): a core actor may crash this often before its supervisor gives up."""
        return self.supervisor.within_seconds, self.supervisor.max_restarts - 1

    def disconnect(self, session: ActorRef, how: str, seconds: float, silent_for: float) -> None:
        """Close a session as `how` (one of `DISCONNECT_KINDS`); "silent": a dead link first.

        A silent session reads and writes nothing more (only the client's own
        timeout can tell), and is dropped after `silent_for` seconds.
        """
        if how == "silent":
            session.ask(GoSilent(), timeout=seconds)  # reads nothing more...
            session.pause()  # ...and writes nothing more
            gevent.spawn_later(silent_for, session.kill, CLOSES["drop"])
        else:
            session.kill(CLOSES[how])

    def forget(self, seconds: float) -> tuple[int, int]:
        """What a restart does to the chat: no rooms, every connection closed (1001).

        Returns how many rooms were forgotten and sessions closed.
        """
        rooms: int = self.registry.ask(ForgetRooms(), timeout=seconds)
        sessions: int = self.hub.ask(DisconnectAll(RESTARTING), timeout=seconds)
        return rooms, sessions

    def delay_delivery(self, delay: float, seconds: float) -> None:
        """Hold every message `delay` seconds before its fan-out (0 ends it)."""
        self.hub.ask(DelayDelivery(delay), timeout=seconds)

    # -- stopping --------------------------------------------------------------

    def stop_gracefully(self, seconds: float) -> tuple[int, int]:
        """Deliver what was accepted, then close every session with 1001, within `seconds`.

        Every post accepted so far is stamped and handed to the hub, then every
        session writes what is already in its outbox and closes; one still
        writing when `seconds` are gone is cut off. Returns how many sessions
        there were and how many were cut off.
        """
        deadline = time.monotonic() + seconds
        sessions: list[ActorRef] = []
        try:
            self.registry.ask(Probe(), timeout=max(deadline - time.monotonic(), 0.1))
            sessions = self.hub.ask(DrainAll(GOING_AWAY),
                                    timeout=max(deadline - time.monotonic(), 0.1))
        except ActorError as error:
            log.warning("event=drain_failed error=%s", logfmt.value(repr(error)))
        cut_off = 0
        for session in sessions:
            if not session.join(timeout=max(deadline - time.monotonic(), 0)):
                session.kill(GOING_AWAY)
                cut_off += 1
        return len(sessions), cut_off

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


def _session_number(session: ActorRef) -> tuple[int, int | str]:
    number = session.name.rpartition(":")[2]
    return (0, int(number)) if number.isdigit() else (1, session.name)


def start_chat(max_rooms: int, max_messages_in_room: int, kozma: bool = False,
               kozma_first_delay: float = 5.0, kozma_max_pause: float = 60.0,
               keepalive_tick: float | None = None,
               observe_fan_out: Callable[[float], None] | None = None,
               redis_url: str = "", redis_stream_messages: int | None = None,
               max_history_bytes: int = 1 << 62,
               max_history_bytes_per_address: int = 1 << 62,
               max_rooms_per_address: int = 1 << 62,
               replay_messages: int = 4095, replay_bytes: int = 4 << 20,
               limits: ConnectionLimits | None = None) -> Chat:
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
    replay as far back as any other. `limits`: what every connection is served with.
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
    return Chat(registry=registry, hub=hub, kozma=bot, directory=directory, supervisor=supervisor,
                limits=limits or ConnectionLimits(), listener=listener, store=store)
