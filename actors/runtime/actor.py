"""The actor: private state and a mailbox, run one message at a time — and only while it has mail.

Everything in nane that owns state is an actor. Nobody outside an actor holds
the actor object: they hold its `ActorRef` (actors/runtime/ref.py) and talk to
it with `tell` (fire and forget) or `ask` (wait for the reply, or for the
exception the actor raised). Because only one greenlet at a time ever runs an
actor, no state needs a lock, and the order in which messages arrive is the
order in which they act.

An actor with no mail holds no greenlet (Erlang's hibernation, Akka's
dispatchers): the first message into an empty mailbox puts the actor in the
dispatcher's run queue, whose workers call `run_turn` until the mailbox is
empty. An idle room or session is a small object, and a fan-out wakes no
greenlet per receiver.

The loop in `run_turn` is all there is to an actor's life: take a message,
`handle` it, repeat. Faults injected on purpose (faults.py) and the trace the
actor view shows (tracing.py) plug into it from outside, and an actor that
nobody slows down or watches pays one `is None` per message for them.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import Event
from greenlet import greenlet

from actors import logfmt
from actors.runtime import tracing
from actors.runtime.dispatcher import dispatcher
from actors.runtime.mailbox import EMPTY, Mailbox
from actors.runtime.messages import (
    ActorError,
    ActorStopped,
    Ask,
    AskTimeout,
    Describe,
    MailboxFull,
    Probe,
    Stop,
)
from actors.runtime.ref import DEFAULT_ASK_TIMEOUT, ActorRef, ask_all

if TYPE_CHECKING:
    from actors.runtime.faults import Faults
    from actors.runtime.supervisor import Supervisor
    from actors.runtime.tracing import Trace

log = logging.getLogger("nane.actors")

# Messages an actor handles in one turn before the actors queued behind it get theirs
# (Akka's "throughput"): a registry with a backlog lets the hub and the sessions keep up
# instead of filling their mailboxes first.
TURN = 64


class Actor:
    """Subclass this: keep state in attributes, answer messages in `receive`.

    Args:
        name: shown in logs and in the actor view.
        mailbox_limit: at most this many waiting messages (None: unbounded).
            A `tell` or `ask` beyond it raises `MailboxFull` in the sender at
            once, so a flooded actor never blocks the one that floods it.
        mailbox_bytes: at most this many bytes waiting, as `weigh` counts
            them (None: no byte budget); beyond it, `MailboxFull` as above.

    The public attributes below `ref` are the runtime's: `ActorRef`, the
    supervisor and the fault controls read them; `receive` has no use for them.
    """

    # Slots, not a __dict__: there is one actor per room and per connection (subclasses
    # that add state declare theirs, or get a __dict__ as usual).
    __slots__ = ("name", "ref", "mailbox", "alive", "stopped", "handled", "failures", "restarts",
                 "faults", "trace", "_started", "_scheduled", "_worker", "_killed", "_supervised_by",
                 "_recent_restarts", "_done")

    kind = "actor"
    # An actor that gets mail rarely (a room) drops its empty mailbox between turns, as an
    # Erlang process hibernates: an idle one is then its state and little else. Busy actors
    # (sessions) keep theirs, or every delivery would allocate one.
    hibernate = False

    def __init__(self, name: str, mailbox_limit: int | None = None,
                 mailbox_bytes: int | None = None):
        self.name = name
        self.ref = ActorRef(self)
        self.mailbox = Mailbox(self, mailbox_limit, mailbox_bytes, keep=not self.hibernate)
        self.alive = False  # takes messages: started, and neither stopped nor killed
        self.stopped = False  # on_stop has run (or is running)
        self.handled = 0
        self.failures = 0
        self.restarts = 0
        self.faults: Faults | None = None  # set by the first fault injected on purpose
        self.trace: Trace | None = None  # set by tracing, when someone watches
        self._started = False  # the runtime called on_start (again after a restart)
        self._scheduled = False  # in the run queue or being run: mail will be handled
        self._worker: greenlet | None = None  # the greenlet running us now, if any
        self._killed: Any = None  # kill's reason, until a worker acts on it
        self._supervised_by: Supervisor | None = None
        self._recent_restarts: deque[float] | None = None  # the supervisor's window
        self._done: Event | None = None  # made by the first `join`

    # -- hooks for subclasses -------------------------------------------------

    def receive(self, message: Any) -> Any:
        """Handle one message; the return value is the reply to an `ask`."""
        raise NotImplementedError

    def on_start(self) -> None:
        """Runs in a worker greenlet before the first message (and after each restart)."""

    def on_stop(self, reason: Any) -> None:
        """Runs once, in a worker greenlet, when the actor stops."""

    def on_failure(self, message: Any, error: Exception) -> None:
        """A message raised `error`; the actor goes on with the next one."""
        log.error("event=actor_failed actor=%s message=%s error=%s", logfmt.value(self.name),
                  type(message).__name__, logfmt.value(repr(error)), exc_info=error,
                  extra={"actor": self.name})

    def weigh(self, message: Any) -> int:
        """The bytes `message` counts against `mailbox_bytes` (only called when it is set).

        It gets what goes into the mailbox, so an ask arrives wrapped: weigh what you know.
        """
        return 0

    def describe(self) -> dict[str, Any]:
        """The actor's own state, for the actor view and the metrics: the answer to `Describe`."""
        return {}

    def _pending(self, kind: type | None = None) -> list[Any]:
        """Take the tells already waiting, up to the next ask or stop (for batching).

        With `kind`, only the leading tells of that type: the first message of
        another type stops the batch and waits for its own turn, so a batch is
        never a mix a handler might mistake for one kind.
        """
        if self.faults is not None and self.faults.one_at_a_time:
            return []  # slowed down or paused: every message waits its own turn
        taken = self.mailbox.take_leading(
            lambda message: type(message) not in (Ask, Stop) and (kind is None or isinstance(message, kind)))
        if taken and tracing.tracing.on:
            for message in taken:
                tracing.remember(self, message)
        return taken

    # -- what ActorRef calls --------------------------------------------------

    def start(self, supervisor: Supervisor | None = None) -> ActorRef:
        """Make the actor live (`on_start` runs soon, in a worker) and return its reference."""
        if self.alive or self.stopped:
            raise ActorError(f"{self.name} was already started")
        self.alive = True
        self._supervised_by = supervisor
        self.wake()
        return self.ref

    def post(self, message: Any) -> None:
        """Put `message` in the mailbox (`MailboxFull` beyond its bounds) and see that it is run."""
        if not self.alive:
            raise ActorStopped(f"{self.name} is stopped")
        self.mailbox.put(message)
        if not self._scheduled:
            self.wake()

    def stop(self, reason: Any) -> None:
        """Refuse new mail; stop with `reason` once the mail already sent is handled."""
        if self.alive:
            self.alive = False
            self.mailbox.put_anyway(Stop(reason))
            self.wake()

    def kill(self, reason: Any) -> None:
        """Stop now, even in the middle of a message; `on_stop(reason)` still runs."""
        if self.stopped or self._killed is not None:
            return
        self.alive = False
        self._killed = reason
        worker = self._worker
        if worker is None:
            self.wake()  # a worker will finish it
        else:  # it is inside a message, maybe blocked: interrupt it there
            gevent.get_hub().loop.run_callback(self._interrupt, worker, reason)

    def join(self, timeout: float | None) -> bool:
        """Wait until the actor has stopped (on_stop done); True if it has."""
        if not self.stopped:
            if self._done is None:
                self._done = Event()
            self._done.wait(timeout)
        return self.stopped

    def wake(self) -> None:
        """Join the dispatcher's run queue, unless already in it or running."""
        if not self._scheduled:
            self._scheduled = True
            dispatcher().schedule(self)

    # -- the loop -------------------------------------------------------------

    def run_turn(self) -> None:
        """One turn: handle up to TURN messages (a dispatcher worker calls this)."""
        self._worker = gevent.getcurrent()
        try:
            if self._killed is None and not self._started:
                self._started = True
                self.on_start()
            take = self.mailbox.take
            handle = self.handle if not tracing.tracing.on else tracing.traced(self)
            faults = self.faults
            if faults is not None:
                faults.before_turn(self)  # a crash needs no mail
            for _ in range(TURN):
                if self._killed is not None:
                    break
                if faults is not None and self.mailbox and not faults.admit(self):
                    break  # paused: the mail stays where it is
                message = take()
                if message is EMPTY:
                    break
                handle(message)
            if self._killed is not None:
                self._finish(self._killed)
        except _Killed as killed:
            self._finish(killed.reason)
        except BaseException as error:  # the run died mid-message: the supervisor decides
            self._crashed(error)
            if not isinstance(error, (gevent.GreenletExit, Exception)):
                raise  # SystemExit, KeyboardInterrupt: not ours to swallow
        finally:
            self._worker = None
            if not self._again():
                self._scheduled = False
                if self.hibernate:
                    self.mailbox.hibernate()

    def handle(self, message: Any) -> None:
        """Act on one message from the mailbox: a tell, an ask to answer, or the stop."""
        kind = type(message)
        if kind is Ask:
            self._answer(message)
        elif kind is Stop:
            self._finish(message.reason)
        else:
            try:
                self.receive(message)
            except Exception as error:  # one bad message must not take the actor down
                self.failures += 1
                self.on_failure(message, error)
            finally:
                self.handled += 1

    def _answer(self, ask: Ask) -> None:
        message, reply = ask.message, ask.reply
        kind = type(message)
        if kind is Probe:
            reply.set(True)
            return
        if kind is Describe:
            try:
                reply.set(self.describe())
            except Exception as error:
                reply.set_exception(error)
            return
        try:
            result = self.receive(message)
        except Exception as error:
            self.failures += 1
            reply.set_exception(error)
        else:
            reply.set(result)
        finally:
            self.handled += 1

    def _again(self) -> bool:
        """After a turn: queue up again for mail still waiting, a kill, or a restart's on_start."""
        if self.stopped:
            return False
        if self._started and self._killed is None:
            waiting = bool(self.mailbox) if self.faults is None else self.faults.has_work(self)
            if not waiting:
                return False
        dispatcher().schedule(self)
        return True

    # -- the end --------------------------------------------------------------

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
        self.alive = False
        try:
            self.on_stop(reason)
        except _Killed:
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

    def _interrupt(self, worker: greenlet, reason: Any) -> None:
        """In gevent's hub: throw `_Killed` into `worker` if it is still inside this actor."""
        if not worker.dead and self._worker is worker and not self.stopped:
            worker.throw(_Killed(reason))


class _Killed(BaseException):
    """Raised inside the worker running an actor, by `ActorRef.kill`."""

    def __init__(self, reason: Any):
        super().__init__(reason)
        self.reason = reason


__all__ = [
    "Actor", "ActorRef", "ActorError", "ActorStopped", "MailboxFull", "AskTimeout", "Probe",
    "Describe", "ask_all", "DEFAULT_ASK_TIMEOUT", "TURN",
]
