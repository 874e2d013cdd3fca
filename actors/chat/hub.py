"""HubActor: the set of open sessions, the fan-out of every message to all of them, and resumes."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Never

import gevent

from actors.chat.message import Message
from actors.chat.resume import (
    NOT_A_POSITION,
    TOO_LARGE,
    Replay,
    ReplayWindow,
    Resume,
    StartAt,
    gone_frame,
    parse,
    seam_frame,
)
from actors.chat.session import SLOW_CONSUMER, Disconnect, KeepAlive
from actors.runtime.actor import Actor, ActorRef, ActorStopped, MailboxFull

log = logging.getLogger("nane.hub")


@dataclass(frozen=True, slots=True)
class Join:
    """A new session wants every message from now on (tell)."""

    session: ActorRef


@dataclass(frozen=True, slots=True)
class Leave:
    """A session has closed (tell)."""

    session: ActorRef


@dataclass(frozen=True, slots=True)
class Deliver:
    """Send an accepted message to every session (tell); `handed_at` times the fan-out."""

    message: Message
    handed_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class ListSessions:
    """Ask: the references of every open session (for the actor view)."""

    untraced: ClassVar[bool] = True  # the view's own question stays out of traces


@dataclass(frozen=True, slots=True)
class DisconnectAll:
    """Close every session with `reason` now (ask: answers how many were closed)."""

    reason: Disconnect


@dataclass(frozen=True, slots=True)
class DrainAll:
    """Graceful stop: every session writes what it has queued, then closes with `reason`.

    Ask: answers the sessions, so the caller can wait for them. From now on the
    hub delivers nothing more and stops every session that joins late the same way.
    """

    reason: Disconnect


@dataclass(frozen=True, slots=True)
class DelayDelivery:
    """Fault control: hold every message `seconds` before its fan-out (ask; 0 ends it).

    Messages keep their order: one posted after the delay changes waits behind
    those already held.
    """

    seconds: float


@dataclass(frozen=True, slots=True)
class ReleaseDelayed:
    """The first held message is due (the hub's timer sends it to the hub)."""

    untraced: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Tick:
    """Time to let every session ping its peer (the hub sends it to itself)."""


@dataclass(frozen=True, slots=True)
class ExpireWaiting:
    """Resumes from positions this process has not reached yet may have waited long enough."""

    untraced: ClassVar[bool] = True


# Every message the hub answers (besides the runtime's own `Probe` and `Describe`);
# `Resume` and `StartAt` are defined with the replay window, in actors/chat/resume.py.
HubMessage = (Deliver | Resume | StartAt | ExpireWaiting | ReleaseDelayed | DelayDelivery | Join
              | Leave | ListSessions | Tick | DrainAll | DisconnectAll)


class HubActor(Actor):
    """Owns the one set of receivers that all rooms share.

    SPEC sends every message to every connection, whatever its room, so the
    receivers of each room are the same set: keeping it once here makes a
    connect or disconnect one set operation whether there are 10 rooms or
    10,000, and memory grows with connections, not rooms x connections.
    The hub never waits for a socket: it drops each message's bytes into the
    session's bounded outbox, and a session whose outbox is full is cut off.

    Being the one that delivers, the hub also serves `Resume` (see
    actors/chat/resume.py): from its `ReplayWindow` of the messages it
    delivered last it puts the replay and the seam into the session's outbox
    and the session into its set, in one turn between two messages, so the seam
    is exact. With Redis a client may resume from a position it saw on a
    process that has read further than this one: that resume waits (up to
    `wait_ahead` seconds) for this hub to deliver as far.

    Args:
        tick_seconds: how often every session gets a `KeepAlive` (None: never).
        observe_fan_out: called with the seconds from the hand-off of a message (by the
            registry, or the listener with Redis) to the last outbox, once per message
            (the fan-out latency metric).
        replay_messages, replay_bytes: the replay window's bounds.
        wait_ahead: seconds a resume from a position not delivered here yet may wait.
    """

    kind = "hub"

    def __init__(self, tick_seconds: float | None = None,
                 observe_fan_out: Callable[[float], None] | None = None,
                 replay_messages: int = 4095, replay_bytes: int = 4 << 20,
                 wait_ahead: float = 0.0):
        super().__init__("hub")
        self._window = ReplayWindow(replay_messages, replay_bytes)
        self._wait_ahead = wait_ahead
        self._waiting: list[tuple[float, Resume]] = []  # (deadline, resume): bounded by sessions
        self._sessions: set[ActorRef] = set()
        self._tick_seconds = tick_seconds
        self._ticker: gevent.Greenlet | None = None
        self._observe = observe_fan_out
        self._draining: Disconnect | None = None
        self._delay = 0.0  # seconds each message is held before its fan-out (a fault control)
        self._held: deque[tuple[float, Deliver]] = deque()  # (due, message), in order
        self.delivered = 0
        self.slow_consumers = 0

    def on_start(self) -> None:
        if self._tick_seconds and self._ticker is None:  # not again after a restart
            self._ticker = gevent.spawn(self._tick_forever)

    def receive(self, message: HubMessage) -> float | int | list[ActorRef] | None:
        match message:
            case Deliver():
                if self._delay or self._held:
                    self._hold(message)
                else:
                    self._deliver(message)
            case Resume():
                self._resume(message)
            case StartAt():
                self._window.start(message)
            case ExpireWaiting():
                self._serve_waiting(expire=True)
            case ReleaseDelayed():
                self._release()
            case DelayDelivery(seconds):
                self._delay = max(0.0, seconds)
                return self._delay
            case Join(session):
                self._join(session)
            case Leave(session):
                self._sessions.discard(session)
            case ListSessions():
                return list(self._sessions)
            case Tick():
                self._fan_out(KeepAlive(), count=False)
            case DrainAll(reason):
                self._draining = reason
                self._delay = 0.0
                for _, held in self._held:  # held by a fault control: owed to everyone
                    self._deliver(held)
                self._held.clear()
                sessions, self._sessions = self._sessions, set()
                for session in sessions:
                    session.stop(reason)
                return list(sessions)
            case DisconnectAll(reason):
                sessions, self._sessions = self._sessions, set()
                for session in sessions:
                    session.kill(reason)
                return len(sessions)
            case _:
                unexpected: Never = message  # mypy fails here if a HubMessage has no case above
                raise TypeError(f"hub cannot handle {unexpected!r}")
        return None  # a tell: nobody waits for an answer

    def _deliver(self, deliver: Deliver) -> None:
        """To every session now, and into the replay window for those that come back later."""
        self._fan_out(deliver.message)
        self._window.add(deliver.message)
        if self._waiting:
            self._serve_waiting()
        if self._observe is not None:
            self._observe(time.monotonic() - deliver.handed_at)

    def _resume(self, request: Resume) -> None:
        """Replay, then join: or wait, when the position is ahead of what was delivered here."""
        window = self._window
        if request.refused is None and self._wait_ahead and request.since:
            position = parse(request.since)
            if position is not None and window.ahead(position):
                if not self._waiting:
                    gevent.spawn_later(self._wait_ahead, self._tell_self, ExpireWaiting())
                self._waiting.append((time.monotonic() + self._wait_ahead, request))
                return
        replay = request.refused or window.after(request.since, request.max_messages,
                                                 request.max_bytes)
        frames = ([gone_frame(replay, window.position)] if isinstance(replay, str) else
                  [message.v2 for message in replay] + [seam_frame(window.position, len(replay))])
        session = request.session
        try:
            try:
                session.tell(Replay(frames))
            except MailboxFull:  # its outbox took pongs meanwhile: the replay no longer fits
                session.tell(gone_frame(TOO_LARGE, window.position))
        except MailboxFull:
            session.kill(SLOW_CONSUMER)
            return
        except ActorStopped:  # the client is gone already
            return
        self._join(session)

    def _serve_waiting(self, expire: bool = False) -> None:
        """Serve the waiting resumes this hub has now delivered far enough for (or given up on)."""
        now, still = time.monotonic(), []
        for deadline, request in self._waiting:
            position = parse(request.since)
            if position is not None and self._window.ahead(position):
                if now < deadline:
                    still.append((deadline, request))
                    continue
                request = Resume(request.session, request.since, 0, 0, NOT_A_POSITION)
            self._resume(request)
        self._waiting = still
        if expire and still:
            gevent.spawn_later(max(0.0, still[0][0] - now), self._tell_self, ExpireWaiting())

    def _join(self, session: ActorRef) -> None:
        if self._draining is not None:
            session.stop(self._draining)
        else:
            self._sessions.add(session)

    def _fan_out(self, frame: Message | KeepAlive, count: bool = True) -> None:
        gone = []
        for session in self._sessions:
            try:
                session.tell(frame)
            except MailboxFull:
                log.warning("event=slow_consumer session=%s", session.name)
                session.kill(SLOW_CONSUMER)
                self.slow_consumers += 1
                gone.append(session)
            except ActorStopped:
                gone.append(session)
        self._sessions.difference_update(gone)
        if count:
            self.delivered += len(self._sessions)

    def _hold(self, deliver: Deliver) -> None:
        self._held.append((time.monotonic() + self._delay, deliver))
        if len(self._held) == 1:
            gevent.spawn_later(self._delay, self._tell_self, ReleaseDelayed())

    def _release(self) -> None:
        """Fan out every held message that is due; wake again for the next one."""
        now = time.monotonic()
        while self._held and self._held[0][0] <= now:
            _, deliver = self._held.popleft()
            self._deliver(deliver)
        if self._held:
            gevent.spawn_later(max(0.0, self._held[0][0] - now), self._tell_self, ReleaseDelayed())

    def _tell_self(self, message: HubMessage) -> None:
        try:
            self.ref.tell(message)
        except ActorStopped:
            pass

    def _tick_forever(self) -> None:
        while True:
            gevent.sleep(self._tick_seconds)
            try:
                self.ref.tell(Tick())
            except ActorStopped:
                return
            except MailboxFull:
                pass

    def on_stop(self, reason: object) -> None:
        if self._ticker is not None:
            self._ticker.kill(block=False)

    def describe(self) -> dict:
        outboxes = [s.mailbox_size for s in self._sessions]
        return {"sessions": len(self._sessions), "delivered": self.delivered,
                "slow_consumers": self.slow_consumers,
                "delay_ms": round(self._delay * 1000), "held": len(self._held),
                "outbox_max": max(outboxes, default=0), "outbox_total": sum(outboxes),
                "replay_window": len(self._window), "resumes_waiting": len(self._waiting)}
