"""The chat message: the one place that validates a client frame and formats a message.

Plain functions and values, no sockets: the rules of docs/protocol.md (trim, cut by
characters, drop when empty, ignore unknown fields and nulls, `id` only when
given, `created` with nine fractional digits and a `Z`) are tested here
without a network. A message is encoded to JSON once, when it is made; every
receiver, the history and the room list reuse those bytes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime


class Frame:
    """One message to clients, its JSON encoded once for all its receivers.

    `json` is the payload: every connection gets the very same bytes, shared by
    every outbox the frame is in. How they travel (a websocket text frame, its
    header put before them per write) is the transport's business, not the chat's.
    """

    __slots__ = ("json",)

    def __init__(self, json: bytes) -> None:
        self.json = json

    def __repr__(self) -> str:
        return f"Frame({self.json[:80]!r})"

    @property
    def v2(self) -> Frame:
        """This frame as a `?v=2` connection gets it (the same, but for a message's `pos`)."""
        return self


PONG = Frame(b'{"pong":true}')


# Why a frame is dropped, as a short label (the `reason` of nane_messages_dropped_total).
DROP_REASONS = ("invalid_json", "too_deep", "number_too_large", "not_object", "wrong_type",
                "missing_field", "invalid_unicode", "id_too_long", "empty", "busy")


class BadFrame(ValueError):
    """A client frame we drop; `reason` is what the `?v=2` error frame says.

    `kind` is one of `DROP_REASONS` (or a label the transport layer adds), for metrics.
    """

    def __init__(self, reason: str, id: str | None = None, kind: str = "invalid_json"):
        super().__init__(reason)
        self.reason = reason
        self.id = id
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Ping:
    """A frame whose `ping` is `true`: answered at once with `PONG`, whatever else it holds.

    The original checks `ping` before anything else, so a client that builds
    every frame from one template (`{"ping": true, "room": "", "text": ""}`)
    keeps its keep-alive, and such a frame is never posted.
    """


@dataclass(frozen=True, slots=True)
class Draft:
    """A valid client message, not yet posted: no room spelling, no `created`."""

    room: str
    text: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    """The cuts the protocol applies to client input, and the longest `id` we keep, in characters."""

    max_room_title_length: int = 50
    max_message_length: int = 10500
    max_id_length: int = 128


def parse_frame(raw: str | bytes, limits: Limits) -> Ping | Draft:
    """Turn one websocket text frame into a `Ping` or a `Draft`.

    Raises:
        BadFrame: invalid JSON, not an object, wrong types, an `id` over
            `max_id_length`, empty room or text.
    """
    try:
        frame = json.loads(raw)
    except RecursionError:
        raise BadFrame("JSON nested too deeply", kind="too_deep") from None
    except json.JSONDecodeError:
        raise BadFrame("invalid JSON") from None
    except ValueError:  # an integer longer than Python converts (sys.get_int_max_str_digits)
        raise BadFrame("a number in the JSON is too large", kind="number_too_large") from None
    if not isinstance(frame, dict):
        raise BadFrame("a message must be a JSON object", kind="not_object")
    if frame.get("ping") is True:
        return Ping()
    id = frame.get("id")
    if id is not None and not isinstance(id, str):
        raise BadFrame("id must be a string", kind="wrong_type")
    if id and not _encodable(id):
        raise BadFrame("id is not valid Unicode (a lone surrogate)", kind="invalid_unicode")
    id = id or None
    if id is not None and len(id) > limits.max_id_length:
        raise BadFrame(f"id is longer than max_id_length ({limits.max_id_length} characters)",
                       id, "id_too_long")
    room, text = frame.get("room"), frame.get("text")
    if room is None or text is None:
        raise BadFrame("room and text are required", id, "missing_field")
    if not isinstance(room, str) or not isinstance(text, str):
        raise BadFrame("room and text must be strings", id, "wrong_type")
    room = room.strip()[: limits.max_room_title_length]
    text = text.strip()[: limits.max_message_length]
    if not room:
        raise BadFrame("room is empty", id, "empty")
    if not text:
        raise BadFrame("text is empty", id, "empty")
    if not (_encodable(room) and _encodable(text)):
        raise BadFrame("room or text is not valid Unicode (a lone surrogate)", id,
                       "invalid_unicode")
    return Draft(room=room, text=text, id=id)


def _encodable(value: str) -> bool:
    """JSON may escape a lone UTF-16 surrogate (`"\\ud800"`); UTF-8 cannot carry one."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def error_frame(problem: BadFrame | str, id: str | None = None) -> Frame:
    """The `?v=2` frame that names a dropped message's problem."""
    reason = problem
    if isinstance(problem, BadFrame):
        reason, id = problem.reason, problem.id
    frame = {"error": reason}
    if id is not None:
        frame["id"] = id
    return Frame(encode_json(frame))


class Clock:
    """Stamps `created`, in nanoseconds since the epoch: unique and increasing, one per message.

    The wall clock may stand still between two posts or step back; a stamp is
    never less than the last one plus 1 ns. With rooms shared through Redis
    another process may have stamped later than this clock says: `seen` moves
    it past that stamp, so the next one comes after it.
    """

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0

    def stamp(self) -> int:
        self.last = max(time.time_ns(), self.last + 1)
        return self.last

    def seen(self, ns: int) -> None:
        """A stamp made elsewhere: every later `stamp` is greater than it."""
        self.last = max(self.last, ns)


def format_created(ns: int) -> str:
    """UTC RFC 3339 with nine fractional digits and `Z`, as the original sent."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{fraction:09d}Z"


class Message(Frame):
    """An accepted chat message, encoded once.

    `json` is the frame every receiver gets and the history keeps (with the
    client's `id` when it gave one); `summary` is the same without `id`, for a
    room's `last_message`.
    """

    __slots__ = ("room", "created", "username", "text", "id", "_summary", "at", "position", "_v2")

    def __init__(self, room: str, created: str, username: str, text: str, id: str | None,
                 at: tuple[int, int] = (0, 0), position: str | None = None):
        self.room = room
        self.created = created
        self.username = username
        self.text = text
        self.id = id
        super().__init__(encode_json(self.as_dict()))
        self._summary: bytes | None = None
        self.at = at  # its place in the one order, as offsets compare (actors/chat/resume.py)
        self.position = position  # the same, as a client sees it: "<run>:<offset>"
        self._v2: Frame | None = None

    def as_dict(self, with_id: bool = True) -> dict:
        message = {"room": self.room, "created": self.created,
                   "sender": {"username": self.username}, "text": self.text}
        if with_id and self.id is not None:
            message = {"id": self.id, **message}
        return message

    def __repr__(self) -> str:
        return f"Message(room={self.room!r}, sender={self.username!r}, text={self.text!r})"

    @property
    def summary(self) -> bytes:
        if self.id is None:
            return self.json
        if self._summary is None:
            self._summary = encode_json(self.as_dict(with_id=False))
        return self._summary

    @property
    def v2(self) -> Frame:
        """The `?v=2` frame: these bytes plus the message's `pos`, built once for all receivers."""
        if self.position is None:
            return self
        if self._v2 is None:
            self._v2 = Frame(self.json[:-1] + b',"pos":' + encode_json(self.position) + b"}")
        return self._v2

    @classmethod
    def from_json(cls, raw: bytes, position: str | None = None,
                  at: tuple[int, int] = (0, 0)) -> Message:
        """A message another process encoded (the Redis path), keeping its bytes as they came."""
        data = json.loads(raw)
        message = cls.__new__(cls)
        message.room, message.created = data["room"], data["created"]
        message.username, message.text = data["sender"]["username"], data["text"]
        message.id = data.get("id")
        Frame.__init__(message, bytes(raw))
        message._summary = None  # noqa: SLF001 - a constructor of its own class
        message.at, message.position, message._v2 = at, position, None  # noqa: SLF001
        return message


def encode_list(items: Iterable[bytes]) -> bytes:
    """`{"result": [...]}` from items that are already JSON, without re-encoding them."""
    return b'{"result":[' + b",".join(items) + b"]}"


def encode_result(value: object) -> bytes:
    return encode_json({"result": value})


def encode_error(text: str) -> bytes:
    return encode_json({"error": text})


def encode_json(value: object) -> bytes:
    """Compact JSON, UTF-8 as it is (the one JSON encoder of everything the server sends)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
