"""An actor's life from outside: started, stopped after its mail, killed mid-message, restarted.

Most of an actor's life is its loop (actor.py): take a message, handle it.
This is the rest, the part others drive. A `stop` is itself a message, so it
queues up behind the mail already sent; a `kill` cannot wait, so it is thrown
into the worker running the actor, wherever it is blocked. When a run dies
some other way, the actor's supervisor decides: restart the same object,
mailbox and state intact, or give up. Either way `on_stop` runs exactly once,
and every ask still waiting fails instead of hanging.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import Event
from greenlet import greenlet

from actors import logfmt
from actors.runtime.messages import ActorError, ActorStopped, Ask, Stop

if TYPE_CHECKING:
    from actors.runtime.mailbox import Mailbox
    from actors.runtime.ref import ActorRef
    from actors.runtime.supervisor import Supervisor

log = logging.getLogger("nane.actors")


class Killed(BaseException):
    """Thrown into the worker running an actor by `kill`: not an Exception, so no handler eats it."""

    def __init__(self, reason: Any):
        super().__init__(reason)
        self.reason = reason


class Lifecycle:
    """The base of `Actor`: what its reference calls, and how a run ends."""

    __slots__ = ("stopped", "restarts", "_started", "_worker", "_killed", "_supervised_by",
                 "_recent_restarts", "_done")

    # Set by Actor.__init__, and Actor's hook:
    name: str
    ref: ActorRef
    mailbox: Mailbox
    on_stop: Callable[[Any], None]

    def __init__(self) -> None:
        self.stopped = False  # on_stop has run (or is running)
        self.restarts = 0
        self._started = False  # the runtime called on_start (again after a restart)
        self._worker: greenlet | None = None  # the greenlet running us now, if any
        self._killed: Any = None  # kill's reason, until a worker acts on it
        self._supervised_by: Supervisor | None = None
        self._recent_restarts: deque[float] | None = None  # the supervisor's window
        self._done: Event | None = None  # made by the first `join`

    @property
    def alive(self) -> bool:
        """Takes messages: started, and neither stopped nor killed."""
        return self.mailbox.open

    def start(self, supervisor: Supervisor | None = None) -> ActorRef:
        """Make the actor live (`on_start` runs soon, in a worker) and return its reference."""
        if self.mailbox.open or self.stopped:
            raise ActorError(f"{self.name} was already started")
        self.mailbox.open = True
        self._supervised_by = supervisor
        self.mailbox.schedule()
        return self.ref

    def stop(self, reason: Any) -> None:
        """Refuse new mail; stop with `reason` once the mail already sent is handled."""
        if self.mailbox.open:
            self.mailbox.close(Stop(reason))

    def kill(self, reason: Any) -> None:
        """Stop now, even in the middle of a message; `on_stop(reason)` still runs."""
        if self.stopped or self._killed is not None:
            return
        self.mailbox.open = False
        self._killed = reason
        worker = self._worker
        if worker is None:
            self.mailbox.schedule()  # a worker will finish it
        else:  # it is inside a message, maybe blocked: interrupt it there
            gevent.get_hub().loop.run_callback(self._interrupt, worker, reason)

    def join(self, timeout: float | None) -> bool:
        """Wait until the actor has stopped (on_stop done); True if it has."""
        if not self.stopped:
            if self._done is None:
                self._done = Event()
            self._done.wait(timeout)
        return self.stopped

    def _interrupt(self, worker: greenlet, reason: Any) -> None:
        """In gevent's hub: throw `Killed` into `worker` if it is still inside this actor."""
        still_inside = self._worker is worker and not self.stopped
        if still_inside and not worker.dead:
            worker.throw(Killed(reason))

    def _crashed(self, error: BaseException) -> None:
        """A run ended by an exception from outside a message's own error handling."""
        self._started = False  # a restart runs on_start again, as a new greenlet would
        if self._supervised_by is None:
            log.error("event=actor_died actor=%s error=%s", logfmt.value(self.name),
                      logfmt.value(repr(error)), exc_info=error, extra={"actor": self.name})
            self._finish("died")
            return
        if self._recent_restarts is None:
            self._recent_restarts = deque()
        gave_up = self._supervised_by.restart_or_give_up(self.ref, error, self._recent_restarts)
        if gave_up is None:
            self.restarts += 1
        else:
            self._finish(gave_up)

    def _finish(self, reason: Any) -> None:
        """Stop for good: run on_stop once and fail every ask still waiting."""
        if self.stopped:
            return
        self.stopped = True
        self.mailbox.open = False
        try:
            self.on_stop(reason)
        except Killed:
            pass  # killed while stopping: it is stopping anyway
        except Exception:
            log.exception("event=on_stop_failed actor=%s", logfmt.value(self.name),
                          extra={"actor": self.name})
        finally:
            for message in self.mailbox.empty_out():
                if type(message) is Ask:
                    message.reply.set_exception(ActorStopped(f"{self.name} stopped"))
            if self._done is not None:
                self._done.set()
