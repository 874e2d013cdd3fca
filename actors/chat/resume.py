"""Positions and resuming: how a `?v=2` client picks up exactly where it left off.

Every accepted message gets a **position**: `"<run>:<offset>"`. `offset` is
the message's place in the one order every connection sees (the in-memory
registry counts 1, 2, 3...; on Redis it is the message's stream id,
`<ms>-<n>`), and `run` names the server run that gave it (a random token per
process start, or per Redis data set), so a position from another run is
recognised, never misread as a place in this one.

A `?v=2` client gets each message with its position as one more field (`pos`);
legacy connections get today's bytes. A client that reconnects with
`?v=2&since=<position>` gets every message after it, in order, then one
`{"pos": ..., "replayed": n}` frame that marks the seam, then the live stream.
When the server cannot give everything after the position (it is older than
what the server keeps for replays, from another run, or the replay would not
fit the client's outbox), it sends `{"gone": <reason>, "pos": ...}` instead of
the replay, and the client reloads what it shows; the live stream goes on from
`pos` either way.

Who serves a resume: the hub, from a `ReplayWindow` of the messages it
delivered last. The hub is the actor that hands every message to every
session, so it can put the replay and then the session itself into its set
between two messages: the seam has no gap and no duplicate. Nobody else is
asked anything — not the sequencer, not a room, not Redis — so a resume costs
what it returns, whatever the number of rooms, and posting never waits for one.
"""

from __future__ import annotations

import re
import secrets
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from itertools import islice

from actors.chat.message import Frame, Message, encode_json
from actors.runtime.actor import ActorRef

SEPARATOR = ":"

# Why a position cannot be resumed from: the `gone` frame's text.
TOO_OLD = "position too old: messages after it are no longer kept"
OTHER_RUN = "position from another server run"
NOT_A_POSITION = "not a position"
TOO_MANY = "too many messages since the position to replay"
TOO_LARGE = "messages since the position are too large to replay"
RATE_LIMITED = "too many resumes from your address, reload"

# An offset as the one order compares them: (n, 0) in memory, (ms, n) for a Redis stream id.
Offset = tuple[int, int]

# ASCII only: Python's \d (and str.isdigit) take any script's digits, which Redis would not.
_POSITION = re.compile(r"([0-9a-z]{1,40}):([0-9]{1,20})(?:-([0-9]{1,20}))?", re.ASCII)


@dataclass(frozen=True, slots=True)
class Position:
    """A position a client sent, parsed once: the run it names and its offset in that run."""

    run: str
    offset: Offset


def parse(text: str) -> Position | None:
    """The position `text` spells (`run:n` or `run:ms-n`, ASCII digits only), or None."""
    match = _POSITION.fullmatch(text)
    if match is None:
        return None
    run, major, minor = match.groups()
    return Position(run, (int(major), int(minor or 0)))


def new_run(prefix: str = "") -> str:
    """A token that names one server run (or one Redis data set)."""
    return prefix + secrets.token_hex(6)


def position_text(run: str, offset: Offset, stream_ids: bool) -> str:
    """How a position is spelled: `run:n`, or `run:ms-n` for a Redis stream id."""
    major, minor = offset
    return f"{run}{SEPARATOR}{major}-{minor}" if stream_ids else f"{run}{SEPARATOR}{major}"


@dataclass(frozen=True, slots=True)
class StartAt:
    """The stream the hub delivers starts (again) at `offset` of `run` (tell, to the hub).

    The sequencer says it at start and when it forgets everything (a new run);
    with Redis the listener says it when it first reads a data set, with the
    stream's `recent` messages, so a fresh process can serve resumes from
    positions its clients saw on another process. `stream_ids`: positions are
    spelled as Redis stream ids.
    """

    run: str
    offset: Offset
    stream_ids: bool = False
    recent: tuple[Message, ...] = ()
    complete: bool = False  # `recent` is all the run ever had (nothing before it was let go)


@dataclass(frozen=True, slots=True)
class Resume:
    """Replay every message after `since` to `session`, then deliver it the live stream (tell).

    `since` is the client's position ("": just the current one). A replay of
    more than `max_messages` messages or `max_bytes` bytes (what the session's
    outbox takes) is answered with `gone`, as is any resume when `refused`
    names why it may not have one (its address resumes too often).
    """

    session: ActorRef
    since: str
    max_messages: int
    max_bytes: int
    refused: str | None = None


class Replay:
    """A resume's frames in one tell: the session writes them as one batch, in order."""

    __slots__ = ("frames", "weight")

    def __init__(self, frames: list[Frame]):
        self.frames = frames
        self.weight = sum(len(frame.json) for frame in frames)


def seam_frame(position: str, replayed: int) -> Frame:
    """After the replay, before the live stream: where the client now is."""
    return Frame(b'{"pos":' + encode_json(position) + b',"replayed":'
                 + str(replayed).encode() + b"}")


def gone_frame(reason: str, position: str) -> Frame:
    """Instead of a replay: the client must reload; the live stream goes on from `position`."""
    return Frame(encode_json({"gone": reason, "pos": position}))


class ReplayWindow:
    """The last messages delivered, oldest first, bounded in count and bytes: what a resume replays.

    `floor` is the offset of the newest message no longer kept (or where the
    run started): a position at or after it has everything after it here.
    Plain data, no actor: the hub owns one and calls it in its turns.

    Args:
        max_messages: messages kept.
        max_bytes: bytes of their `?v=2` frames kept.
    """

    __slots__ = ("max_messages", "max_bytes", "run", "stream_ids", "now", "floor", "_messages",
                 "_bytes")

    def __init__(self, max_messages: int, max_bytes: int):
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.start(StartAt("", (0, 0)))

    def start(self, at: StartAt) -> None:
        """Begin a run at `at.offset`, keeping `at.recent` (the stream's last messages)."""
        self.run, self.stream_ids = at.run, at.stream_ids
        self._messages: deque[Message] = deque()
        self._bytes = 0
        recent = at.recent
        if recent and not at.complete:  # the oldest one only marks where the kept ones begin
            self.floor, recent = recent[0].at, recent[1:]
        else:
            self.floor = (0, 0) if recent else at.offset
        self.now = at.offset
        for message in recent:
            self.add(message)
        self.now = max(self.now, at.offset)

    def add(self, message: Message) -> None:
        """`message` was just delivered; let the oldest go past the bounds."""
        self._messages.append(message)
        self._bytes += _v2_length(message)
        self.now = message.at
        while len(self._messages) > self.max_messages or (
                self._bytes > self.max_bytes and len(self._messages) > 1):
            oldest = self._messages.popleft()
            self._bytes -= _v2_length(oldest)
            self.floor = oldest.at

    @property
    def position(self) -> str:
        """The position of the last message delivered: where a client joining now stands."""
        return position_text(self.run, self.now, self.stream_ids)

    def ahead(self, position: Position) -> bool:
        """Is `position` of this run, but past what was delivered here (yet)?"""
        return position.run == self.run and position.offset > self.now

    def after(self, since: str, max_messages: int, max_bytes: int) -> list[Message] | str:
        """Every message after `since`, oldest first, or why they cannot all be given.

        Costs what it returns: one binary search, then the messages themselves.
        """
        if not since:
            return []
        position = parse(since)
        if position is None:
            return NOT_A_POSITION
        if position.run != self.run:
            return OTHER_RUN
        if position.offset > self.now:
            return NOT_A_POSITION
        if position.offset < self.floor:
            return TOO_OLD
        count = len(self._messages) - bisect_right(self._messages, position.offset,
                                                   key=_offset_of)
        if count > max_messages:
            return TOO_MANY
        replay = list(islice(reversed(self._messages), count))
        replay.reverse()
        if sum(map(_v2_length, replay)) > max_bytes:
            return TOO_LARGE
        return replay

    def __len__(self) -> int:
        return len(self._messages)


def _offset_of(message: Message) -> Offset:
    return message.at


def _v2_length(message: Message) -> int:
    """The length of `message.v2.json` without building it (most are never sent as `?v=2`):
    the JSON, then `,"pos":"<position>"` before its closing brace (positions are ASCII)."""
    return len(message.json) + (len(message.position) + 9 if message.position else 0)
