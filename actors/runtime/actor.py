"""The actor: private state and a mailbox, run one message at a time — and only while it has mail.

Everything in nane that owns state is an actor. Nobody outside an actor holds
the actor object: they hold its `ActorRef` (actors/runtime/ref.py) and talk to
it with `tell` (fire and forget) or `ask` (wait for the reply, or for the
exception the actor raised). Because only one greenlet at a time ever runs an
actor, no state needs a lock, and the order in which messages arrive is the
order in which they act.

An actor with no mail holds no greenlet (Erlang's hibernation, Akka's
dispatchers): the first message into an idle actor's mailbox (mailbox.py)
puts it in the dispatcher's run queue (dispatcher.py), whose workers call
`run_turn` until the mailbox is empty. An idle room or session is a small
object, and a fan-out wakes no greenlet per receiver.

The loop in `run_turn` is all there is to an actor's life: take a message,
`handle` it, repeat. Faults injected on purpose (faults.py) and the trace the
actor view shows (tracing.py) plug into it from outside, and an actor that
nobody slows down or watches pays one `is None` per message for them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import gevent

from actors import logfmt
from actors.runtime.dispatcher import dispatcher
from actors.runtime.lifecycle import Killed, Lifecycle
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
from actors.runtime.tracing import remember, traced, tracing

if TYPE_CHECKING:
    from actors.runtime.faults import Faults
    from actors.runtime.tracing import Trace

log = logging.getLogger("nane.actors")

# Messages an actor handles in one turn before the actors queued behind it get theirs
# (Akka's "throughput"): a registry with a backlog lets the hub and the sessions keep up
# instead of filling their mailboxes first.
TURN = 64


class Actor(Lifecycle):
    """Subclass this: keep state in attributes, answer messages in `receive`.

    Args:
        name: shown in logs and in the actor view.
        mailbox_limit: at most this many waiting messages (None: unbounded).
            A `tell` or `ask` beyond it raises `MailboxFull` in the sender at
            once, so a flooded actor never blocks the one that floods it.
        mailbox_bytes: at most this many bytes waiting, as `weigh` counts
            them (None: no byte budget); beyond it, `MailboxFull` as above.

    Its public attributes besides `name` and `ref` are the runtime's (with
    `Lifecycle`'s: `alive`, `stopped`, `restarts`): `ActorRef`, the supervisor
    and the fault controls read them; `receive` has no use for them.
    """

    # Slots, not a __dict__: there is one actor per room and per connection (subclasses
    # that add state declare theirs, or get a __dict__ as usual).
    __slots__ = ("name", "ref", "mailbox", "handled", "failures", "faults", "trace")

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
        self.handled = 0
        self.failures = 0
        self.faults: Faults | None = None  # set by the first fault injected on purpose
        self.trace: Trace | None = None  # set by tracing, when someone watches
        super().__init__()

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
        taken = self.mailbox.take_tells(kind)
        if taken and tracing.on:
            for message in taken:
                remember(self, message)
        return taken

    # -- the loop -------------------------------------------------------------

    def run_turn(self) -> None:
        """One turn: handle up to TURN messages (a dispatcher worker calls this)."""
        self._worker = gevent.getcurrent()
        drained = False  # the mailbox said EMPTY: no need to look again after the turn
        try:
            if self._killed is None and not self._started:
                self._started = True
                self.on_start()
            mailbox = self.mailbox
            handle = self.handle if not tracing.on else traced(self)
            faults = self.faults
            if faults is not None:
                faults.before_turn(self)  # a crash needs no mail
            turn = TURN
            while turn and self._killed is None:
                if faults is not None and mailbox and not faults.admit(self):
                    break  # paused: the mail stays where it is
                message = mailbox.take()
                if message is EMPTY:
                    drained = True
                    break
                handle(message)
                turn -= 1
            if self._killed is not None:
                self._finish(self._killed)
        except Killed as killed:
            self._finish(killed.reason)
        except BaseException as error:  # the run died mid-message: the supervisor decides
            self._crashed(error)
            if not isinstance(error, (gevent.GreenletExit, Exception)):
                raise  # SystemExit, KeyboardInterrupt: not ours to swallow
        finally:
            self._worker = None
            if not self._again(drained):
                self.mailbox.scheduled = False
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
        """Reply to an ask: `Probe` and `Describe` by the runtime, anything else by `receive`."""
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

    def _again(self, drained: bool) -> bool:
        """After a turn: queue up again for mail still waiting, a kill, or a restart's on_start."""
        if self.stopped:
            return False
        if self._started and self._killed is None:
            if self.faults is not None:
                waiting = self.faults.has_work(self)
            else:
                waiting = not drained and bool(self.mailbox)
            if not waiting:
                return False
        dispatcher().schedule(self)
        return True


__all__ = [
    "Actor", "ActorRef", "ActorError", "ActorStopped", "MailboxFull", "AskTimeout", "Probe",
    "Describe", "ask_all", "DEFAULT_ASK_TIMEOUT", "TURN",
]
