"""Per-connection flood control: plain arithmetic, no sockets, tested without a network."""

from __future__ import annotations

import ipaddress
import time


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

    def full(self, now: float) -> bool:
        """Would the bucket be full at `now`? (Then forgetting it changes nothing.)"""
        if self._updated is None:
            return True
        return self._tokens + (now - self._updated) * self.per_second >= self.burst

    @property
    def flooding(self) -> bool:
        """Frames were dropped in more than `max_flood_seconds` seconds in a row."""
        return self._drop_streak > self.max_flood_seconds


class AddressLimits:
    """Per client address: how many connections it holds, one message budget and one resume budget.

    The per-connection rate limit alone lets one person open forty connections
    and send forty times the rate. An address's connections share one
    `FloodGuard` (it is only ever asked to admit, never to close: a shared
    budget running dry drops messages, it does not cut anyone off), forgotten
    with the address's last connection. The resume budget (`?v=2&since=`
    replays) outlives the connections, since a client that resumes in a loop
    closes each one; it is forgotten once it has filled up again.

    Args:
        max_connections: connections one address may hold at once.
        per_second: messages per second all of an address's connections may send together.
        resumes_per_second: replays an address may ask for per second.
    """

    def __init__(self, max_connections: int, per_second: int, resumes_per_second: int = 1 << 30):
        self.max_connections = max_connections
        self.per_second = per_second
        self.resumes_per_second = resumes_per_second
        self._open: dict[str, int] = {}
        self._budgets: dict[str, FloodGuard] = {}
        self._resumes: dict[str, FloodGuard] = {}

    def acquire(self, address: str) -> bool:
        """Take a connection for `address`; False when it already holds its share."""
        held = self._open.get(address, 0)
        if held >= self.max_connections:
            return False
        self._open[address] = held + 1
        return True

    def release(self, address: str) -> None:
        held = self._open.get(address, 0) - 1
        if held > 0:
            self._open[address] = held
        else:
            self._open.pop(address, None)
            self._budgets.pop(address, None)

    def resumes(self, address: str) -> FloodGuard:
        """The resume budget of `address`."""
        guard = self._resumes.get(address)
        if guard is None:
            if len(self._resumes) >= 2 * len(self._open) + 1024:  # forget the full ones
                now = time.monotonic()
                self._resumes = {a: g for a, g in self._resumes.items() if not g.full(now)}
            guard = self._resumes[address] = FloodGuard(self.resumes_per_second,
                                                        max_flood_seconds=0)
        return guard

    def budget(self, address: str) -> FloodGuard:
        """The message budget `address`'s connections share."""
        guard = self._budgets.get(address)
        if guard is None:
            guard = self._budgets[address] = FloodGuard(self.per_second, max_flood_seconds=0)
        return guard


def client_address(environ: dict, trusted_proxies: frozenset[str]) -> str:
    """Who is connecting: the peer, or what a proxy the operator trusts says it forwarded for.

    gunicorn's `forwarded_allow_ips` convention: `X-Forwarded-For` is believed
    only from a peer in `trusted_proxies` (or any peer with "*"), and then its
    last entry, the one that proxy appended, is the client. An entry that is
    not an IP address (or carries an IPv6 zone, `%<any text>`) is refused and
    the peer counts: it would be a key for the per-address limits and a string
    in the log that anyone can choose.
    """
    peer = environ.get("REMOTE_ADDR") or "-"
    if "*" in trusted_proxies or peer in trusted_proxies:
        forwarded = [part.strip() for part in environ.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        forwarded = [part for part in forwarded if part]
        if forwarded:
            try:
                address = ipaddress.ip_address(forwarded[-1])
            except ValueError:
                return peer
            if not getattr(address, "scope_id", None):  # `fe80::1%<anything>` is no client's
                return str(address)
    return peer


def trusted_proxies(setting: str) -> frozenset[str]:
    """`forwarded_allow_ips` ("127.0.0.1,::1", or "*") as a set of addresses."""
    return frozenset(part.strip() for part in setting.split(",") if part.strip())
