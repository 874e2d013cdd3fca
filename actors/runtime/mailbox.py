"""The mailbox: the one place that knows what waits for an actor, and whether the actor will run.

A mailbox with no bound lets one fast sender fill a slow actor's memory; so
each mailbox may be bounded in count (`limit`) and in bytes (`max_bytes`, as
the owner's `weigh` counts them), and a message beyond either is refused at
once with `MailboxFull`: the sender learns of it, nobody blocks. A sender
that prefers to wait (`tell(wait=...)`) waits here for room.

As in Akka, the mailbox also holds the actor's two states that every send
reads: `open` (a stopped actor's mailbox is closed) and `scheduled` (the
actor is in the dispatcher's run queue or running). So a `tell` is one call:
`put` checks, appends, and wakes an idle actor.

Every message that leaves the mailbox leaves through one of its methods, so
the count, the bytes and "there is room again" can never disagree. An actor
that gets mail rarely may drop its empty queue between turns (`hibernate`),
as an Erlang process hibernates: the mailbox then holds no deque at all.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import gevent
from gevent.event import Event

from actors.runtime.dispatcher import dispatcher
from actors.runtime.messages import ActorStopped, Ask, MailboxFull, Stop


class Owner(Protocol):
    """What a mailbox needs of its actor: a name for its errors, a message's weight, a turn to run."""

    name: str

    def weigh(self, message: Any) -> int: ...

    def run_turn(self) -> None: ...


EMPTY = object()  # what `take` returns when nothing waits (a message may be None)


class Mailbox:
    """The messages waiting for one actor, oldest first, within its bounds.

    Args:
        owner: the actor whose mail this is.
        limit: at most this many messages waiting (None: unbounded).
        max_bytes: at most this many bytes waiting (None: no byte budget); a
            message alone in an empty mailbox always goes in, however heavy.
        keep: keep the queue while it is empty (False: `hibernate` drops it).
    """

    __slots__ = ("limit", "max_bytes", "weight", "open", "scheduled", "_owner", "_queue", "_room")

    def __init__(self, owner: Owner, limit: int | None = None, max_bytes: int | None = None,
                 keep: bool = True):
        self.limit = limit
        self.max_bytes = max_bytes
        self.weight = 0  # bytes waiting, counted only under a byte budget
        self.open = False  # takes mail: the actor started, and was neither stopped nor killed
        self.scheduled = False  # the actor is in the run queue or running: its mail will be handled
        self._owner = owner
        self._queue: deque[Any] | None = deque() if keep else None
        self._room: Event | None = None  # set when a message leaves, made by the first waiter

    def __len__(self) -> int:
        return len(self._queue) if self._queue is not None else 0

    @property
    def hibernating(self) -> bool:
        """True while the mailbox holds no queue at all."""
        return self._queue is None

    def put(self, message: Any) -> None:
        """Append `message` and see that the actor runs; `ActorStopped` or `MailboxFull` if not."""
        if not self.open:
            raise ActorStopped(f"{self._owner.name} is stopped")
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        if self.limit is not None and len(queue) >= self.limit:
            raise MailboxFull(f"{self._owner.name} has {self.limit} messages waiting")
        if self.max_bytes is not None:
            weight = self._owner.weigh(message)
            if weight and self.weight + weight > self.max_bytes and queue:
                raise MailboxFull(f"{self._owner.name} has {self.weight} bytes waiting")
            self.weight += weight
        queue.append(message)
        if not self.scheduled:
            self.schedule()

    def schedule(self) -> None:
        """Put the actor in the dispatcher's run queue, unless it is there or running already."""
        if not self.scheduled:
            self.scheduled = True
            dispatcher().schedule(self._owner)

    def close(self, last: Any) -> None:
        """Take no more mail after `last`, which goes in past every bound (the stop sentinel)."""
        self.open = False
        if self._queue is None:
            self._queue = deque()
        self._queue.append(last)
        self.schedule()

    def full(self, message: Any) -> bool:
        """Whether `put(message)` would be refused now."""
        queue = self._queue
        if self.limit is not None and len(queue or ()) >= self.limit:
            return True
        if self.max_bytes is None or not queue:
            return False
        weight = self._owner.weigh(message)
        return bool(weight) and self.weight + weight > self.max_bytes

    def wait_for_room(self, message: Any, seconds: float) -> None:
        """Block until `message` fits, the mailbox closes, or `seconds` pass."""
        with gevent.Timeout(seconds, False):
            while self.open and self.full(message):
                if self._room is None:
                    self._room = Event()
                self._room.clear()
                self._room.wait()

    def take(self) -> Any:
        """The oldest message, removed; `EMPTY` when none waits."""
        queue = self._queue
        if not queue:
            return EMPTY
        message = queue.popleft()
        # `_gone` for one message, written out: every message an actor handles comes this way
        if self.max_bytes is not None:
            self.weight -= self._owner.weigh(message)
        if self._room is not None:
            self._room.set()
        return message

    def take_tells(self, kind: type | None = None) -> list[Any]:
        """Remove and return the tells at the head, up to the first ask or stop (or not a `kind`)."""
        queue = self._queue
        taken: list[Any] = []
        if kind is None:
            while queue and type(queue[0]) not in (Ask, Stop):
                taken.append(queue.popleft())
        else:
            while queue and type(queue[0]) not in (Ask, Stop) and isinstance(queue[0], kind):
                taken.append(queue.popleft())
        if taken:
            self._gone(taken)
        return taken

    def pick(self, wanted: Callable[[Any], bool], since: int) -> list[Any]:
        """Remove and return the messages from position `since` on that are `wanted`.

        Searched from the newest back to `since`, so a caller that remembers how
        far it looked pays only for what came in since.
        """
        queue = self._queue or deque()
        picked = []
        for index in range(len(queue) - 1, min(since, len(queue)) - 1, -1):  # newest first
            if wanted(queue[index]):
                picked.append(queue[index])
                del queue[index]
        if picked:
            self._gone(picked)
        return picked

    def empty_out(self) -> list[Any]:
        """Remove and return everything waiting (the actor stopped)."""
        left = list(self._queue or ())
        if self._queue:
            self._queue.clear()
        self.weight = 0
        if self._room is not None:
            self._room.set()
        return left

    def hibernate(self) -> None:
        """Drop the queue if it is empty (it comes back with the next message)."""
        if not self._queue:
            self._queue = None

    def _gone(self, messages: list[Any]) -> None:
        """`messages` left: take their bytes off, and wake a sender waiting for room."""
        if self.max_bytes is not None:
            self.weight -= sum(map(self._owner.weigh, messages))
        if self._room is not None:
            self._room.set()
