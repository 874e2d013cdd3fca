"""Per-address limits: connections, the shared message budget, resumes; and who the client is.

Plain arithmetic, no sockets, tested without a network. A connection's own
rate limit is the chat's (actors/chat/flood.py); what one address's
connections share is kept here and handed to the chat as an `AddressShare`.
"""

from __future__ import annotations

import ipaddress
import time

from actors.chat.flood import FloodGuard


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

    def __init__(self, max_connections: int, per_second: int,
                 resumes_per_second: int = 1 << 30) -> None:
        self.max_connections = max_connections
        self.per_second = per_second
        self.resumes_per_second = resumes_per_second
        self._open: dict[str, int] = {}
        self._shares: dict[str, AddressShare] = {}  # one per address, its connections share it
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
            self._shares.pop(address, None)

    def share(self, address: str) -> AddressShare:
        """What `address`'s connections share, as the chat's reader asks it (one per address)."""
        share = self._shares.get(address)
        if share is None:
            guard = FloodGuard(self.per_second, max_flood_seconds=0)
            share = self._shares[address] = AddressShare(self, address, guard)
        return share

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
        return self.share(address).budget


class AddressShare:
    """An address's budgets as its connections' readers see them: the narrow interface they use."""

    __slots__ = ("_limits", "_address", "budget")

    def __init__(self, limits: AddressLimits, address: str, budget: FloodGuard) -> None:
        self._limits = limits
        self._address = address
        self.budget = budget

    @property
    def per_second(self) -> int:
        return self.budget.per_second

    def admit_message(self, now: float, characters: int) -> bool:
        """May one more frame of `characters` from this address through at `now`?"""
        return self.budget.admit(now, characters)

    def admit_resume(self, now: float) -> bool:
        """May this address have one more replay (`?v=2&since=`) at `now`?"""
        return self._limits.resumes(self._address).admit(now)


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

    def __init__(self, share: int, exempt: frozenset[str] = frozenset()) -> None:
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
