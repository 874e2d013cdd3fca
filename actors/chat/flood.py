"""A connection's rate limit: a token bucket charged by frame length, and a flood spotter.

Plain arithmetic, no sockets, tested without a network. Every connection's
reader (actors/chat/connection.py) keeps one `FloodGuard`; the per-address
budgets that several connections share (app/ops/limits.py) are `FloodGuard`s too.
"""

from __future__ import annotations

# A frame counts as one message for every started this many characters. Parsing JSON costs
# up to ~40 ns a character whatever the frame holds (bench/parse_cost.py), so the rate
# limits bound parse time, not only frames: 200 messages a second (an address's default)
# are at most ~33 ms of parsing a second, however the frames are built. A chat message of
# up to 4,096 characters costs one, as before; a frame of the largest size about 32.
CHARACTERS_PER_MESSAGE = 4096


def cost_of(characters: int) -> int:
    """What a frame of `characters` costs the rate limits, in messages (at least one)."""
    return max(1, -(-characters // CHARACTERS_PER_MESSAGE))


class FloodGuard:
    """Admits at most `per_second` frames a second (bursts of `burst`), and spots a flood.

    A token bucket: each frame takes a token per started `CHARACTERS_PER_MESSAGE`
    characters (what it costs to parse), tokens come back at `per_second`
    and the bucket holds `burst` (five seconds' worth by default, so a client
    that reconnects and resends its unacknowledged backlog is not punished). A frame
    without tokens enough is dropped, unparsed. A connection that has frames dropped in more than
    `max_flood_seconds` consecutive seconds is flooding: the caller closes it;
    drops decided elsewhere (the address's shared budget) count too (`dropped`).

    Args:
        per_second: the sustained rate allowed.
        max_flood_seconds: seconds in a row with drops that are still tolerated.
        burst: the bucket size (default 5 x per_second).
    """

    __slots__ = ("per_second", "burst", "max_flood_seconds", "_tokens", "_updated",
                 "_last_drop_second", "_drop_streak")

    def __init__(self, per_second: int, max_flood_seconds: int, burst: int | None = None):
        self.per_second = per_second
        self.burst = burst or 5 * per_second
        self.max_flood_seconds = max_flood_seconds
        self._tokens = float(self.burst)
        self._updated: float | None = None
        self._last_drop_second = -2
        self._drop_streak = 0

    def admit(self, now: float, characters: int = 0) -> bool:
        """One frame of `characters` arrives at `now` (monotonic seconds): may it through?

        Its cost is capped at `burst`, so that with a full bucket any frame passes.
        """
        if self._updated is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.per_second)
        self._updated = now
        cost = min(cost_of(characters), self.burst)
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        self.dropped(now)
        return False

    def dropped(self, now: float) -> None:
        """A frame of this connection was dropped at `now`: it counts towards a flood."""
        second = int(now)
        if second != self._last_drop_second:
            consecutive = second == self._last_drop_second + 1
            self._drop_streak = self._drop_streak + 1 if consecutive else 1
            self._last_drop_second = second

    def full(self, now: float) -> bool:
        """Would the bucket be full at `now`? (Then forgetting it changes nothing.)"""
        if self._updated is None:
            return True
        return self._tokens + (now - self._updated) * self.per_second >= self.burst

    @property
    def flooding(self) -> bool:
        """Frames were dropped in more than `max_flood_seconds` seconds in a row."""
        return self._drop_streak > self.max_flood_seconds
