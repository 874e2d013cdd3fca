"""Supervision: restart an actor whose greenlet died, OTP-style.

An exception while handling one message never kills an actor (the loop
reports it and takes the next message). A greenlet can still die — killed from
outside, or a BaseException — and then its supervisor starts a new greenlet on
the SAME actor object: the mailbox and the state survive, only the loop is new.
A restart that keeps failing is a bug, not bad luck: after `max_restarts`
within `within_seconds` the supervisor gives up loudly and the actor stops.
"""

from __future__ import annotations

import logging
import time
from collections import deque

from actors.actor import Actor

log = logging.getLogger("nane.supervisor")


class Supervisor:
    """Restarts the actors it watches, at most N times in T seconds each.

    Args:
        name: shown in the log lines it writes.
        max_restarts: restarts allowed within the window before giving up.
        within_seconds: the sliding window.
    """

    def __init__(self, name: str = "supervisor", max_restarts: int = 5,
                 within_seconds: float = 10.0):
        self.name = name
        self.max_restarts = max_restarts
        self.within_seconds = within_seconds

    def watch(self, actor: Actor) -> None:
        """Restart `actor` whenever its greenlet ends without a stop."""
        recent: deque[float] = deque()

        def on_death(greenlet) -> None:
            if actor._stopped or greenlet is not actor._greenlet:
                return  # a deliberate stop, or an old incarnation
            now = time.monotonic()
            while recent and now - recent[0] > self.within_seconds:
                recent.popleft()
            if len(recent) >= self.max_restarts:
                log.critical("supervisor=%s gives up on actor=%s after %d restarts in %ss",
                             self.name, actor.name, len(recent), self.within_seconds)
                actor._give_up("too many restarts")
                return
            recent.append(now)
            actor._restarts += 1
            log.warning("supervisor=%s restarts actor=%s (greenlet ended: %r)",
                        self.name, actor.name, greenlet.exception or greenlet.value)
            actor._spawn()
            actor._greenlet.link(on_death)

        actor._greenlet.link(on_death)
