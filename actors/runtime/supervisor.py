"""Supervision: restart an actor whose run died, OTP-style.

An exception while handling one message never kills an actor (the runtime
reports it and takes the next message). A run can still die — its greenlet
killed from outside, or a BaseException — and then its supervisor restarts
the SAME actor object: the mailbox and the state survive, `on_start` runs
again, and the next message is handled as usual. A restart that keeps
failing is a bug, not bad luck: after `max_restarts` within `within_seconds`
the supervisor gives up loudly and the actor stops.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from actors import logfmt
from actors.runtime.actor import Actor, ActorRef

log = logging.getLogger("nane.supervisor")


class Supervisor:
    """Restarts the actors started under it, at most N times in T seconds each.

    Args:
        name: shown in the log lines it writes.
        max_restarts: restarts allowed within the window before giving up.
        within_seconds: the sliding window.
        on_give_up: called with the actor's reference when the supervisor gives
            up on it (its owner forgets it, say, so the next user gets a fresh one).
    """

    def __init__(self, name: str = "supervisor", max_restarts: int = 5,
                 within_seconds: float = 10.0,
                 on_give_up: Callable[[ActorRef], None] | None = None):
        self.name = name
        self.max_restarts = max_restarts
        self.within_seconds = within_seconds
        self.on_give_up = on_give_up

    def may_restart(self, actor: Actor, error: BaseException) -> bool:
        """`actor`'s run died with `error`: count a restart, or refuse (the actor then stops)."""
        recent = actor._recent_restarts
        if recent is None:
            recent = actor._recent_restarts = deque()
        now = time.monotonic()
        while recent and now - recent[0] > self.within_seconds:
            recent.popleft()
        if len(recent) >= self.max_restarts:
            log.critical("event=supervisor_gives_up supervisor=%s actor=%s restarts=%d seconds=%s",
                         logfmt.value(self.name), logfmt.value(actor.name), len(recent),
                         self.within_seconds)
            if self.on_give_up is not None:
                self.on_give_up(actor.ref)
            return False
        recent.append(now)
        actor._restarts += 1
        log.warning("event=supervisor_restarts supervisor=%s actor=%s error=%s",
                    logfmt.value(self.name), logfmt.value(actor.name), logfmt.value(repr(error)),
                    exc_info=error)
        return True
