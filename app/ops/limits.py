"""Rate limits per connection and per address: plain arithmetic, no sockets, tested without a network."""

from __future__ import annotations

import ipaddress
import time

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


class AddressLimits:
    """Per client address: how many connections it holds, one message budget and one resume budget.

    The per-connection rate limit alone lets one person open forty connections
    and send forty times the rate. An address's connections share one
    `FloodGuard`, charged as each connection's own is, and forgotten with the
    address's last connection. It only admits; a connection whose frame it
    drops counts the drop towards its own flood (`FloodGuard.dropped`), so a
    flood spread over many connections is closed like one on a single
    connection. The resume budget (`?v=2&since=` replays) outlives the
    connections, since a client that resumes in a loop closes each one; it is
    forgotten once it has filled up again.

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


class AcceptedSockets:
    """Open TCP connections per client address, counted from `accept()` to close.

    A connection costs a file descriptor from the moment it is accepted,
    whether or not it ever sends a request; the process has a fixed number of
    them (RLIMIT_NOFILE). Without a share per address, one address holding
    idle connections leaves none for anybody else. Each address may hold
    `share` at once; a connection beyond it is closed as soon as it is
    accepted. Peers in `exempt` (trusted proxies, which forward many clients)
    are not counted: behind a proxy the share is the proxy's to keep.

    Args:
        share: connections one address may hold open at once.
        exempt: peer addresses that are not counted (`trusted_proxies`; "*": none is).
    """

    def __init__(self, share: int, exempt: frozenset[str] = frozenset()):
        self.share = share
        self.exempt = exempt
        self._open: dict[str, int] = {}
        self.refused: dict[str, int] = {}  # connections refused since the address was last under its share

    def admit(self, address: str) -> bool:
        """A connection from `address` was accepted: may it stay open?"""
        if address in self.exempt or "*" in self.exempt:
            return True
        held = self._open.get(address, 0)
        if held >= self.share:
            self.refused[address] = self.refused.get(address, 0) + 1
            return False
        self._open[address] = held + 1
        return True

    def release(self, address: str) -> None:
        """A connection that `admit` let in has closed."""
        if address in self.exempt or "*" in self.exempt:
            return
        held = self._open.get(address, 0) - 1
        if held > 0:
            self._open[address] = held
        else:
            self._open.pop(address, None)
        if held < self.share:
            self.refused.pop(address, None)

    def held(self, address: str) -> int:
        return self._open.get(address, 0)
