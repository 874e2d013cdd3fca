"""One connection's reader: what each frame a client sends means, from its session's start to its end.

Each connection is one greenlet that runs `serve`: it starts the connection's
`SessionActor` (the writing side), joins it to the hub (or has the hub replay
to it first: a `?v=2&since=` resume), then reads frames until the peer is gone
and turns each into a message for the actors:

- every frame is charged first, by its length, to the connection's own rate
  (`FloodGuard`) and to its address's share (`AddressShare`); a frame over
  either is dropped unparsed (its `id` echoed when it is short), and frames
  dropped for more than `max_flood_seconds` seconds in a row close the
  connection (1008);
- a ping (`{"ping": true}`) is answered with a pong; a chat message is posted
  to the registry; anything else is dropped, with an error frame to a `?v=2`
  client; once the server is stopping no message is accepted.

The reader writes nothing itself: its pongs and error frames go through the
session's outbox like every other frame. It knows a transport (`Transport`)
and a counter of events (`Observer`), not a socket, a websocket library or
Prometheus: those are the app's (app/websocket/, app/ops/metrics.py).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from gevent.event import AsyncResult

from actors import logfmt
from actors.chat import session as sessions
from actors.chat.flood import FloodGuard
from actors.chat.hub import Join, Leave
from actors.chat.message import (
    DROP_REASONS,
    PONG,
    BadFrame,
    Frame,
    Limits,
    Ping,
    error_frame,
    parse_frame,
)
from actors.chat.registry import Post
from actors.chat.resume import RATE_LIMITED, Resume
from actors.chat.session import Disconnect, SessionActor, SessionEnded
from actors.runtime.actor import ActorRef, ActorStopped, MailboxFull

log = logging.getLogger("nane.ws")


class Transport(sessions.Transport, Protocol):
    """What the reader needs from a websocket, besides what its session writes with."""

    error_code: int | None  # the close code it sent when the client broke a rule, if it did
    admit_control: Callable[[], bool]  # asked for every ping and pong frame; False drops it

    def receive(self) -> str | bytes | None:
        """The next message: text, or bytes for a binary one; None once the connection ended."""

    def refuse(self, code: int, reason: str) -> None:
        """Close for a broken rule and read nothing more."""


class AddressShare(Protocol):
    """What all connections from one client address may still do together (the app keeps the books)."""

    @property
    def per_second(self) -> int:
        """The messages per second the address's connections may send together."""

    def admit_message(self, now: float, characters: int) -> bool:
        """May one more frame of `characters` through at `now` (monotonic seconds)?"""

    def admit_resume(self, now: float) -> bool:
        """May the address have one more replay at `now`?"""


class Observer(Protocol):
    """Who counts connection events (the app's metrics); every call is cheap and never blocks."""

    def opened(self) -> None:
        """A connection was accepted."""

    def received(self) -> None:
        """A data frame arrived (before any check)."""

    def dropped(self, kind: str) -> None:
        """A frame was not accepted as a message: `kind` is one of `DROP_KINDS`."""

    def closed(self, reason: str) -> None:
        """A connection ended: `reason` is one of `END_REASONS`."""


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The limits every connection is served with (from the configuration).

    Args:
        max_room_title_length, max_message_length, max_id_length: what a client
            frame may hold (`message.Limits`, as `parse`).
        messages_per_second: one connection's rate (see `FloodGuard`).
        max_flood_seconds: seconds in a row with dropped frames before it is closed.
        max_outbox: frames that may wait for a slow reader.
        max_outbox_bytes: bytes of frames that may wait for it.
        ping_interval: seconds between protocol pings.
        ping_timeout: seconds a ping may go unanswered.
    """

    max_room_title_length: int = 50
    max_message_length: int = 10500
    max_id_length: int = 128
    messages_per_second: int = 20
    max_flood_seconds: int = 5
    max_outbox: int = 4096
    max_outbox_bytes: int = 4 << 20
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    parse: Limits = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parse", Limits(self.max_room_title_length,
                                                 self.max_message_length, self.max_id_length))


# Why a frame is dropped before it is parsed (`message.DROP_REASONS` are the others).
DROPPED_BEFORE_PARSING = ("rate_limited", "binary")
# Why a frame is not accepted as a message (the `reason` of nane_messages_dropped_total).
DROP_KINDS = (*DROP_REASONS, *DROPPED_BEFORE_PARSING)
BY_CONTROL = "fault control"  # the close reason of every disconnect a fault control makes
FLOOD = Disconnect(1008, "too many messages")
TRY_LATER = Disconnect(1013, "server busy, try again later")
_CUT_OFF_REASONS = {sessions.SLOW_CONSUMER: "slow_consumer", FLOOD: "flood",
                    sessions.PING_TIMEOUT: "ping_timeout", sessions.GOING_AWAY: "shutdown"}
_CLOSE_CODE_REASONS = {1009: "too_large", 1007: "invalid_utf8", 1002: "protocol_error",
                       1008: "flood"}
# Why a connection ended, as a short label (the `reason` of nane_disconnects_total).
END_REASONS = (*_CUT_OFF_REASONS.values(), *_CLOSE_CODE_REASONS.values(), "client", "control")

# A post that finds the registry's mailbox full waits this long for room: the reader stops
# reading meanwhile, so TCP slows that one client instead of its messages being dropped.
POST_WAIT_SECONDS = 5.0
# A rate-limited frame is read for its `id` only when it is this short (a chat message of a
# line or two with its id): parsing it costs a few microseconds, where a frame of the
# largest size can cost milliseconds, and paying that for every dropped frame was the
# flood the budget is there to stop.
ID_OF_DROPPED_FRAMES_UP_TO = 1024

_session_numbers = itertools.count(1)


class ChatActors(Protocol):
    """What a connection's reader talks to: the hub, the registry, and the limits it serves with."""

    hub: ActorRef
    registry: ActorRef
    limits: ConnectionLimits


def serve(chat: ChatActors, transport: Transport, username: str, address: str, *,
          v2: bool = False, since: str | None = None, share: AddressShare, observer: Observer,
          stopping: Callable[[], bool]) -> None:
    """Serve one client on `transport` until it is gone: read frames, post messages, answer pings.

    `v2` and `since` are the client's `?v=2` and resume position; `share` is
    what its address may still send; `observer` counts what happens;
    `stopping` says whether the server stopped taking messages. This is
    `Chat.connect` itself, not wrapped: the reader's greenlet waits here for
    every connection's whole life, and each frame on its stack is memory every
    idle connection holds (an extra one cost 4 KiB a connection, a page).
    """
    hub, registry, limits = chat.hub, chat.registry, chat.limits
    name = f"session:{next(_session_numbers)}"
    who = logfmt.value(username)  # as it goes into a log line
    flood = FloodGuard(limits.messages_per_second, limits.max_flood_seconds)

    def admit_control() -> bool:
        """Pings and pongs spend the connection's rate like messages do."""
        if flood.admit(time.monotonic()):
            return True
        if flood.flooding:
            log.warning("event=flood session=%s username=%s remote=%s frames=control",
                        name, who, address)
            transport.refuse(FLOOD.code, FLOOD.reason)
        return False

    transport.admit_control = admit_control
    ended: AsyncResult = AsyncResult()  # the session's own report of how it ended
    session = SessionActor(name, transport, username, limits.max_outbox,
                           limits.ping_interval, limits.ping_timeout,
                           limits.max_outbox_bytes, positions=v2,
                           ended=ended).start(sessions.SUPERVISOR)
    _join(hub, session, since if v2 else None, limits, share)
    observer.opened()
    log.info("event=ws_open session=%s username=%s remote=%s v2=%s", name, who, address, v2)
    cut_off: Disconnect | None = None
    try:
        while (raw := transport.receive()) is not None:
            observer.received()
            try:
                over = _over_rate(flood, share, len(raw))
                if over is not None:
                    if flood.flooding:
                        cut_off = FLOOD
                        log.warning("event=flood session=%s username=%s remote=%s",
                                    name, who, address)
                        break
                    raise rate_limited(raw, limits.parse, *over, v2)
                reply = handle_frame(raw, username, limits.parse, registry,
                                     reply_to=session if v2 else None, address=address,
                                     stopping=stopping())
            except BadFrame as bad:
                observer.dropped(bad.kind)
                if bad.kind != "rate_limited":  # a flood would write a line per frame
                    log.info("event=dropped session=%s reason=%s", name, logfmt.value(bad.reason))
                reply = error_frame(bad) if v2 else None
            if reply is not None:
                try:
                    session.tell(reply)
                except (MailboxFull, ActorStopped):
                    break
    finally:
        hub.tell(Leave(session))
        session.stop(cut_off or "stopped")
        end: SessionEnded | None = ended.wait(timeout=2)  # None: a paused session stops later
        observer.closed(end_reason(cut_off or (end.closed_with if end else None),
                                   transport.error_code))
        log.info("event=ws_close session=%s username=%s sent=%s", name, who,
                 end.sent if end else "unknown")


def _join(hub: ActorRef, session: ActorRef, since: str | None, limits: ConnectionLimits,
          share: AddressShare) -> None:
    """Join the hub, or resume (`since`): the hub replays from there, then joins the session."""
    if since is None:
        hub.tell(Join(session))
        return
    refused = None
    if since and not share.admit_resume(time.monotonic()):
        refused = RATE_LIMITED
    try:  # actors/chat/resume.py
        hub.tell(Resume(session, since, limits.max_outbox - 1, limits.max_outbox_bytes,
                        refused))
    except ActorStopped:
        session.stop(TRY_LATER)


def _over_rate(flood: FloodGuard, share: AddressShare, size: int) -> tuple[int, str] | None:
    """Charge a frame of `size` characters to the connection's rate, then to its address's share.

    Both are charged before the frame is parsed, by its length (what parsing it
    costs: `flood.cost_of`); a dropped frame is never parsed. Returns None when
    both admit it, else the rate it is over and what the client is told.
    """
    now = time.monotonic()
    if not flood.admit(now, size):
        return flood.per_second, "too many messages"
    if not share.admit_message(now, size):
        flood.dropped(now)  # the address's flood is this connection's too
        return share.per_second, "too many messages from your address"
    return None


def end_reason(cut_off: Disconnect | None, close_code: int | None) -> str:
    """Why a connection ended, as one of `END_REASONS`: what cut it off, else its close code."""
    if cut_off is not None:
        return _CUT_OFF_REASONS.get(cut_off) or (
            "control" if cut_off.reason.startswith(BY_CONTROL) else "client")
    return _CLOSE_CODE_REASONS.get(close_code or 0, "client")


def rate_limited(raw: str | bytes, limits: Limits, per_second: int, what: str,
                 v2: bool) -> BadFrame:
    """The drop of a frame over a rate of `per_second`, parsed at most if short, to echo its `id`."""
    id = None
    if v2 and not isinstance(raw, bytes) and len(raw) <= ID_OF_DROPPED_FRAMES_UP_TO:
        try:
            parsed = parse_frame(raw, limits)
            id = getattr(parsed, "id", None)
        except BadFrame as bad:
            id = bad.id
    return BadFrame(f"{what}: at most {per_second} per second", id, "rate_limited")


def handle_frame(raw: str | bytes, username: str, limits: Limits, registry: ActorRef,
                 reply_to: ActorRef | None = None, address: str = "",
                 stopping: bool = False) -> Frame | None:
    """One client frame in; the frame to answer with (a pong), if any.

    `reply_to` is the session of a client that opted in to error frames: it
    hears about a message that could not be delivered after it was accepted.
    Once the server is `stopping` no message is accepted (the last accepted
    ones are delivered before every session closes: `Chat.stop_gracefully`).

    Raises:
        BadFrame: the message is dropped, for the reason it carries.
    """
    if isinstance(raw, bytes):
        raise BadFrame("binary frames are not supported; send JSON text", kind="binary")
    parsed = parse_frame(raw, limits)
    if isinstance(parsed, Ping):
        return PONG
    if stopping:
        raise BadFrame("server shutting down, message not accepted", parsed.id, "busy")
    try:
        registry.tell(Post(parsed, username, reply_to, address), wait=POST_WAIT_SECONDS)
    except (MailboxFull, ActorStopped):
        raise BadFrame("server busy, message not accepted", parsed.id, "busy") from None
    return None
