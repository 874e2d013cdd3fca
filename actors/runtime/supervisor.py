"""Supervision: restart an actor whose run died, OTP-style.

An exception while handling one message never kills an actor (the runtime
reports it and takes the next message). A run can still die — its greenlet
killed from outside, or a BaseException — and then its supervisor restarts
the SAME actor object: the mailbox and the state survive, `on_start` runs
again, and the next message is handled as usual. A restart that keeps
failing is a bug, not bad luck: after `max_restarts` within `within_seconds`
the supervisor gives up loudly and the actor stops, with a `GaveUp` as the
reason its `on_stop` gets — a value to match, not a string to compare.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from actors import logfmt

if TYPE_CHECKING:
    from actors.runtime.ref import ActorRef

log = logging.getLogger("nane.supervisor")

MAX_RESTARTS = 5  # restarts a supervisor allows by default within RESTART_WINDOW...
RESTART_WINDOW = 10.0  # ...seconds; one more and it gives up


@dataclass(frozen=True)
class GaveUp:
    """The reason `on_stop` gets when the actor's supervisor would not restart it again."""

    supervisor: str
    restarts: int
    seconds: float


class Supervisor:
    """Restarts the actors started under it, at most N times in T seconds each.

    Args:
        name: shown in the log lines it writes.
        max_restarts: restarts allowed within the window before giving up.
        within_seconds: the sliding window.
        on_give_up: called with the actor's reference when the supervisor gives
            up on it (its owner forgets it, say, so the next user gets a fresh one).
    """

    def __init__(self, name: str = "supervisor", max_restarts: int = MAX_RESTARTS,
                 within_seconds: float = RESTART_WINDOW,
                 on_give_up: Callable[[ActorRef], None] | None = None):
        self.name = name
        self.max_restarts = max_restarts
        self.within_seconds = within_seconds
        self.on_give_up = on_give_up

    def restart_or_give_up(self, ref: ActorRef, error: BaseException,
                           recent: deque[float]) -> GaveUp | None:
        """`ref`'s run died with `error`: None to restart it, or why the supervisor gives up.

        `recent` is the actor's own window, the times of its restarts; a restart is
        counted in it, and the ones older than `within_seconds` leave it.
        """
        now = time.monotonic()
        while recent and now - recent[0] > self.within_seconds:
            recent.popleft()
        if len(recent) >= self.max_restarts:
            log.critical("event=supervisor_gives_up supervisor=%s actor=%s restarts=%d seconds=%s",
                         logfmt.value(self.name), logfmt.value(ref.name), len(recent),
                         self.within_seconds, extra={"actor": ref.name})
            if self.on_give_up is not None:
                self.on_give_up(ref)
            return GaveUp(self.name, len(recent), self.within_seconds)
        recent.append(now)
        log.warning("event=supervisor_restarts supervisor=%s actor=%s error=%s",
                    logfmt.value(self.name), logfmt.value(ref.name), logfmt.value(repr(error)),
                    exc_info=error, extra={"actor": ref.name})
        return None
