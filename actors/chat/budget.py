"""Fair shares of the history budget: who gives way when the rooms are full, by client address.

Plain data, no actor: the registry owns one `Shares` and asks it, in its own
turns, which messages and rooms must go. The rule is the same for bytes and
for rooms: each client address may hold a share of the whole; past its share
its own oldest go first; when the whole is full, the address holding the most
gives way. So one address, however many connections it opens, cannot push
out the others' messages while it holds more than they do.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from actors.chat.message import Message

Key = TypeVar("Key")
# Whatever its owner keeps a room as: to the budget a room is only something to count and name.
Room = TypeVar("Room", bound=Hashable)


class Tally(Generic[Key]):
    """Amounts by key, their total, and which key has the most (a heap, stale entries skipped)."""

    __slots__ = ("total", "_amounts", "_heap")

    def __init__(self) -> None:
        self.total = 0
        self._amounts: dict[Key, int] = {}
        self._heap: list[tuple[int, Key]] = []

    def add(self, key: Key, amount: int) -> None:
        now = self._amounts.get(key, 0) + amount
        self.total += amount
        if now:
            self._amounts[key] = now
            heapq.heappush(self._heap, (-now, key))
            if len(self._heap) > 2 * len(self._amounts) + 64:  # drop the stale entries
                self._heap = [(-value, k) for k, value in self._amounts.items()]
                heapq.heapify(self._heap)
        else:
            self._amounts.pop(key, None)

    def __getitem__(self, key: Key) -> int:
        return self._amounts.get(key, 0)

    def biggest(self) -> Key | None:
        """The key with the largest amount (None when all are zero)."""
        heap = self._heap
        while heap:
            amount, key = heap[0]
            if self._amounts.get(key) == -amount:
                return key
            heapq.heappop(heap)
        return None


class Held(Generic[Room]):
    """One message a room keeps, as the budget counts it: its size and whose share it is in."""

    __slots__ = ("message", "room", "address", "size", "gone")

    def __init__(self, message: Message, room: Room, address: str, size: int):
        self.message = message
        self.room = room
        self.address = address
        self.size = size
        self.gone = False


class Shares(Generic[Room]):
    """Bytes of messages held, by the address that posted them; rooms, by who created them.

    Args:
        max_bytes: bytes all histories keep together.
        max_bytes_per_address: bytes one address's messages may hold.
        max_rooms: rooms kept at once.
        max_rooms_per_address: rooms one address may have created and kept.
    """

    def __init__(self, max_bytes: int, max_bytes_per_address: int, max_rooms: int,
                 max_rooms_per_address: int):
        self.max_bytes = max_bytes
        self.max_bytes_per_address = max_bytes_per_address
        self.max_rooms = max_rooms
        self.max_rooms_per_address = max_rooms_per_address
        self.bytes: Tally[str] = Tally()
        self.rooms: Tally[str] = Tally()
        self._held: dict[str, deque[Held[Room]]] = {}  # per address, oldest first (gone ones skipped)
        self._live: dict[str, int] = {}
        self._created: dict[str, OrderedDict[Room, None]] = {}  # per address, idlest first

    # -- messages -------------------------------------------------------------

    def hold(self, held: Held[Room]) -> list[Held[Room]]:
        """Count a new message; answer the older ones that must go to keep every bound."""
        address = held.address
        self._held.setdefault(address, deque()).append(held)
        self._live[address] = self._live.get(address, 0) + 1
        self.bytes.add(address, held.size)
        gone: list[Held[Room]] = []
        while self.bytes[address] > self.max_bytes_per_address:
            if not self._let_go_oldest(address, held, gone):
                break
        while self.bytes.total > self.max_bytes:
            biggest = self.bytes.biggest()
            if biggest is None or not self._let_go_oldest(biggest, held, gone):
                break
        return gone

    def release(self, held: Held[Room]) -> None:
        """`held` left its room (trimmed by count, or its room was forgotten)."""
        if held.gone:
            return
        held.gone = True
        address = held.address
        self.bytes.add(address, -held.size)
        self._live[address] -= 1
        queue = self._held[address]
        if not self._live[address]:
            del self._live[address], self._held[address]
        elif len(queue) > 2 * self._live[address] + 16:  # many gone ones behind a live one
            self._held[address] = deque(h for h in queue if not h.gone)

    def _let_go_oldest(self, address: str, keep: Held[Room], gone: list[Held[Room]]) -> bool:
        """Let `address`'s oldest message go, unless that is `keep`; False when none can go."""
        queue = self._held.get(address)
        while queue and queue[0].gone:
            queue.popleft()
        if not queue or queue[0] is keep:
            return False
        oldest = queue[0]
        self.release(oldest)
        gone.append(oldest)
        return True

    # -- rooms ----------------------------------------------------------------

    def room_to_forget(self, creator: str) -> Room | None:
        """Before `creator` makes a room: the room that must go first, if any."""
        if self.rooms[creator] >= self.max_rooms_per_address:
            return next(iter(self._created[creator]))
        if self.rooms.total >= self.max_rooms:
            biggest = self.rooms.biggest()
            if biggest is not None:
                return next(iter(self._created[biggest]))
        return None

    def created(self, creator: str, room: Room) -> None:
        self._created.setdefault(creator, OrderedDict())[room] = None
        self.rooms.add(creator, 1)

    def touched(self, creator: str, room: Room) -> None:
        """A message went to `room`: it is its creator's most recently active one now."""
        self._created[creator].move_to_end(room)

    def forgotten(self, creator: str, room: Room) -> None:
        rooms = self._created[creator]
        del rooms[room]
        if not rooms:
            del self._created[creator]
        self.rooms.add(creator, -1)
