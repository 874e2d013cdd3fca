"""Per-connection flood control: plain arithmetic, no sockets, tested without a network."""

from __future__ import annotations


class FloodGuard:
    """Admits at most `per_second` frames a second (bursts of `burst`), and spots a flood.

    A token bucket: each frame takes a token, tokens come back at `per_second`
    and the bucket holds `burst` (five seconds' worth by default, so a client
    that reconnects and resends its unacknowledged backlog is not punished). A frame with
    no token is dropped. A connection that has frames dropped in more than
    `max_flood_seconds` consecutive seconds is flooding: the caller closes it.

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

    def admit(self, now: float) -> bool:
        """One frame arrives at `now` (monotonic seconds): may it through?"""
        if self._updated is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.per_second)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        second = int(now)
        if second != self._last_drop_second:
            consecutive = second == self._last_drop_second + 1
            self._drop_streak = self._drop_streak + 1 if consecutive else 1
            self._last_drop_second = second
        return False

    @property
    def flooding(self) -> bool:
        """Frames were dropped in more than `max_flood_seconds` seconds in a row."""
        return self._drop_streak > self.max_flood_seconds
