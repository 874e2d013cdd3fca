"""Positions and resuming: how a `?v=2` client picks up exactly where it left off.

Every accepted message gets a **position**: `"<run>:<offset>"`. `offset` is
the message's place in the one order every connection sees (the in-memory
registry counts 1, 2, 3...; on Redis it is the message's stream id), and
`run` names the server run that gave it (a random token per process start, or
per Redis data set), so a position from another run is recognised, never
misread as a place in this one.

A `?v=2` client gets each message with its position as one more field (`pos`);
legacy connections get today's bytes. A client that reconnects with
`?v=2&since=<position>` gets every message after it, in order, then one
`{"pos": ..., "replayed": n}` frame that marks the seam, then the live stream.
When the server no longer holds everything after the position (a room trimmed
its history or was forgotten, another run, a replay larger than the outbox),
it sends `{"gone": <reason>, "pos": ...}` instead of the replay, and the client
reloads what it shows; the live stream goes on from `pos` either way.

The seam has no gap and no duplicate because the actor that orders messages
also orders the resume: it sends the replay into the session's outbox and then
joins the session to the hub, between two messages (see `registry.RegistryActor`
and `listener.Listener`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from actors.chat.hub import Join
from actors.chat.message import Frame, Message
from actors.chat.session import SLOW_CONSUMER
from actors.runtime.actor import ActorError, ActorRef, MailboxFull

SEPARATOR = ":"

# Why a position cannot be resumed from: the `gone` frame's text.
TOO_OLD = "position too old: messages after it are no longer kept"
OTHER_RUN = "position from another server run"
NOT_A_POSITION = "not a position"
TOO_MANY = "too many messages since the position to replay"
UNAVAILABLE = "messages after the position cannot be read now"


@dataclass(frozen=True, slots=True)
class Resume:
    """Join `session` to the live stream after replaying every message after `since` (tell).

    `since` is the client's position ("" asks only for the current one).
    A replay longer than `max_replay` messages is answered with a `gone` frame.
    """

    session: ActorRef
    since: str
    max_replay: int


@dataclass(frozen=True, slots=True)
class Position:
    run: str
    offset: str

    def __str__(self) -> str:
        return self.run + SEPARATOR + self.offset


def new_run(prefix: str = "") -> str:
    """A token that names one server run (or one Redis data set)."""
    return prefix + secrets.token_hex(6)


def parse(text: str) -> Position | None:
    """The position a client sent, or None when it is not one."""
    run, separator, offset = text.partition(SEPARATOR)
    if not (separator and run and offset) or len(text) > 100:
        return None
    return Position(run, offset)


def seam_frame(position: str, replayed: int) -> Frame:
    """After the replay, before the live stream: where the client now is."""
    return Frame(b'{"pos":' + json.dumps(position).encode() + b',"replayed":'
                 + str(replayed).encode() + b"}")


def gone_frame(reason: str, position: str) -> Frame:
    """Instead of a replay: the client must reload; the live stream goes on from `position`."""
    return Frame(json.dumps({"gone": reason, "pos": position}, ensure_ascii=False,
                            separators=(",", ":")).encode())


def answer(session: ActorRef, hub: ActorRef, replay: list[Message], gone: str | None,
           now: str) -> None:
    """Put the replay and the seam (or the `gone` frame) in the outbox, then join the hub.

    Only the sequencer calls this, between two messages it hands to the hub:
    that is what makes the seam exact.
    """
    frames = ([gone_frame(gone, now)] if gone else
              [message.v2 for message in replay] + [seam_frame(now, len(replay))])
    try:
        for frame in frames:
            session.tell(frame)
    except MailboxFull:
        session.kill(SLOW_CONSUMER)
        return
    except ActorError:  # the client is gone already
        return
    hub.tell(Join(session))


def messages_after(history: Sequence[Message], seq: int, dropped: bool) -> tuple[list[Message], bool]:
    """A room's messages after `seq`, oldest first, and whether that is all of them.

    `history` is oldest first; `dropped` says whether the room ever let a
    message go. What it let go came before the oldest message it keeps, whose
    `previous_seq` names the newest of those: the answer is complete when
    nothing was dropped or that one is at or before `seq`.
    """
    newer: list[Message] = []
    oldest = None
    for message in reversed(history):
        oldest = message
        if message.seq <= seq:
            break
        newer.append(message)
    newer.reverse()
    complete = not dropped or (oldest is not None and oldest.previous_seq <= seq)
    return newer, complete
