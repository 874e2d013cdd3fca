"""The actor: private state, a mailbox, and a greenlet that takes one message at a time.

Everything in nane that owns state is an actor. Nobody outside an actor holds
the actor object: they hold its `ActorRef` and talk to it with `tell` (fire and
forget) or `ask` (wait for the reply, or for the exception the actor raised).
Because only the actor's own greenlet ever touches its state, no state needs a
lock, and the order in which messages arrive is the order in which they act.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import AsyncResult
from gevent.queue import Queue

from actors.tracing import Trace, tracing

if TYPE_CHECKING:
    from actors.supervisor import Supervisor

log = logging.getLogger("nane.actors")

DEFAULT_ASK_TIMEOUT = 5.0


class ActorError(Exception):
    """Base of the errors the actor runtime raises."""


class ActorStopped(ActorError):
    """The actor has stopped: it takes no more messages, and pending asks fail."""


class MailboxFull(ActorError):
    """The actor's bounded mailbox is full; the message was not delivered."""


class AskTimeout(ActorError):
    """The actor did not answer an ask in time."""


# What a mailbox holds: (message, reply) — a message on its way, and where to
# put the reply (None for a tell). A plain tuple: it is made on every send.
Envelope = tuple


class _Stop:
    """The sentinel `stop` puts behind all earlier messages, with the reason `on_stop` gets."""

    __slots__ = ("reason",)

    def __init__(self, reason: Any):
        self.reason = reason


class Probe:
    """Ask any actor `Probe()`: it answers True once every earlier message is handled.

    The runtime answers it, not `receive`, so every actor can be probed for
    readiness (`/readyz`) without knowing anything about it.
    """

    __slots__ = ()


class Actor:
    """Subclass this: keep state in attributes, answer messages in `receive`.

    Args:
        name: shown in logs and in the actor view.
        mailbox_limit: at most this many waiting messages (None: unbounded).
            A `tell` or `ask` beyond it raises `MailboxFull` in the sender at
            once, so a flooded actor never blocks the one that floods it.
    """

    kind = "actor"

    def __init__(self, name: str, mailbox_limit: int | None = None):
        self.name = name
        self.ref = ActorRef(self)
        self._mailbox: Queue = Queue()
        self._mailbox_limit = mailbox_limit
        self._greenlet: gevent.Greenlet | None = None
        self._running = False
        self._stopped = False
        self._handled = 0
        self._failures = 0
        self._restarts = 0
        self._trace = Trace()  # what the actor view shows; filled only while someone watches

    # -- hooks for subclasses -------------------------------------------------

    def receive(self, message: Any) -> Any:
        """Handle one message; the return value is the reply to an `ask`."""
        raise NotImplementedError

    def on_start(self) -> None:
        """Runs in the actor's greenlet before the first message."""

    def on_stop(self, reason: Any) -> None:
        """Runs once, in the actor's greenlet, when the actor stops."""

    def on_failure(self, message: Any, error: Exception) -> None:
        """A message raised `error`; the actor goes on with the next one."""
        log.error("actor=%s failed on %s: %r", self.name, type(message).__name__, error,
                  exc_info=error)

    def info(self) -> dict:
        """What the actor view shows of this actor (subclasses add to it)."""
        return {}

    # -- lifecycle ------------------------------------------------------------

    def start(self, supervisor: "Supervisor | None" = None) -> "ActorRef":
        """Start the actor's greenlet and return the reference others use."""
        if self._greenlet is not None:
            raise ActorError(f"{self.name} was already started")
        self._running = True
        self._spawn()
        if supervisor is not None:
            supervisor.watch(self)
        return self.ref

    def _spawn(self) -> None:
        self._greenlet = gevent.spawn(self._loop)
        self._greenlet.name = self.name

    def _loop(self) -> None:
        try:
            self.on_start()
            while True:
                envelope = self._mailbox.get()
                if type(envelope) is _Stop:
                    self._finish(envelope.reason)
                    return
                self._handle(envelope)
        except _Killed as killed:
            self._finish(killed.reason)

    def _handle(self, envelope: Envelope) -> None:
        message, reply = envelope
        if tracing.on:
            self._trace.remember(message)
        try:
            result = True if type(message) is Probe else self.receive(message)
        except Exception as error:  # one bad message must not take the actor down
            self._failures += 1
            if reply is not None:
                reply.set_exception(error)
            else:
                self.on_failure(message, error)
        else:
            if reply is not None:
                reply.set(result)
        finally:
            self._handled += 1

    def _pending(self) -> list[Any]:
        """Take the messages already waiting, without blocking (for batching)."""
        taken = []
        while not self._mailbox.empty():
            envelope = self._mailbox.peek()
            if type(envelope) is _Stop or envelope[1] is not None:
                break
            taken.append(self._mailbox.get()[0])
        if tracing.on:
            for message in taken:
                self._trace.remember(message)
        return taken

    def _finish(self, reason: Any) -> None:
        """Stop for good: run on_stop once and fail every ask still waiting."""
        if self._stopped:
            return
        self._stopped = True
        self._running = False
        try:
            self.on_stop(reason)
        except Exception:
            log.exception("actor=%s on_stop failed", self.name)
        while not self._mailbox.empty():
            envelope = self._mailbox.get()
            if type(envelope) is not _Stop and envelope[1] is not None:
                envelope[1].set_exception(ActorStopped(f"{self.name} stopped"))

    def _give_up(self, reason: str) -> None:
        """Called by a supervisor that will not restart this actor again."""
        self._finish(reason)


class ActorRef:
    """The handle everyone else holds: the only way into an actor."""

    __slots__ = ("_actor",)

    def __init__(self, actor: Actor):
        self._actor = actor

    @property
    def name(self) -> str:
        return self._actor.name

    @property
    def alive(self) -> bool:
        return self._actor._running

    @property
    def mailbox_size(self) -> int:
        """Messages waiting now (read without a message, for metrics)."""
        return self._actor._mailbox.qsize()

    def tell(self, message: Any) -> None:
        """Deliver `message` and return at once.

        Raises:
            ActorStopped: the actor has stopped.
            MailboxFull: the actor's mailbox is at its limit.
        """
        self._post(message, None)

    def ask(self, message: Any, timeout: float = DEFAULT_ASK_TIMEOUT) -> Any:
        """Deliver `message` and wait for the actor's reply.

        Raises:
            ActorStopped, MailboxFull: as for `tell`, or the actor stopped
                before it answered.
            AskTimeout: no reply within `timeout` seconds.
            Exception: whatever the actor raised while handling the message.
        """
        reply = AsyncResult()
        self._post(message, reply)
        try:
            return reply.get(timeout=timeout)
        except gevent.Timeout:
            raise AskTimeout(f"{self.name} did not answer within {timeout}s") from None

    def _post(self, message: Any, reply: AsyncResult | None) -> None:
        actor = self._actor
        if not actor._running:
            raise ActorStopped(f"{actor.name} is stopped")
        limit = actor._mailbox_limit
        if limit is not None and actor._mailbox.qsize() >= limit:
            raise MailboxFull(f"{actor.name} has {limit} messages waiting")
        actor._mailbox.put((message, reply))  # an Envelope's fields, as a plain tuple: cheaper

    def stop(self, reason: Any = "stopped") -> None:
        """Stop after the messages already sent; later ones are refused.

        The stop sentinel goes in even past the mailbox limit; `on_stop` gets
        `reason` (a session closes its websocket with it after its outbox drains).
        """
        actor = self._actor
        if actor._running:
            actor._running = False
            actor._mailbox.put(_Stop(reason))

    def kill(self, reason: Any) -> None:
        """Stop now, even in the middle of a message (e.g. a write that hangs).

        `on_stop(reason)` still runs, in the dying greenlet.
        """
        actor = self._actor
        actor._running = False
        greenlet = actor._greenlet
        if greenlet is None or greenlet.dead:
            actor._finish(reason)
        else:
            greenlet.kill(_Killed(reason), block=False)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the actor's greenlet has ended; True if it has."""
        greenlet = self._actor._greenlet
        if greenlet is None:
            return True
        greenlet.join(timeout)
        return greenlet.dead and self._actor._stopped

    def info(self) -> dict:
        """Runtime facts about the actor, like Erlang's process_info.

        Counters kept by the runtime, not the actor's own state: reading them
        sends no message and never waits. `recent` lists the last messages
        handled while tracing was on (oldest first), or nothing.
        """
        actor = self._actor
        facts = {
            "name": actor.name,
            "kind": actor.kind,
            "alive": actor._running,
            "mailbox": actor._mailbox.qsize(),
            "mailbox_limit": actor._mailbox_limit,
            "handled": actor._handled,
            "failures": actor._failures,
            "restarts": actor._restarts,
            "recent": actor._trace.recent(),
        }
        facts.update(actor.info())
        return facts

    def __repr__(self) -> str:
        return f"<ActorRef {self.name}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other._actor is self._actor

    def __hash__(self) -> int:
        return id(self._actor)


class _Killed(BaseException):
    """Raised inside an actor's greenlet by `ActorRef.kill`."""

    def __init__(self, reason: Any):
        super().__init__(reason)
        self.reason = reason


__all__ = [
    "Actor", "ActorRef", "ActorError", "ActorStopped", "MailboxFull", "AskTimeout", "Probe",
    "DEFAULT_ASK_TIMEOUT",
]
