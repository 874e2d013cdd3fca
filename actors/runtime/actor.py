"""The actor: private state and a mailbox, run one message at a time — and only while it has mail.

Everything in nane that owns state is an actor. Nobody outside an actor holds
the actor object: they hold its `ActorRef` and talk to it with `tell` (fire and
forget) or `ask` (wait for the reply, or for the exception the actor raised).
Because only one greenlet at a time ever runs an actor, no state needs a lock,
and the order in which messages arrive is the order in which they act.

Two ways to look at an actor from outside, as in Erlang: what the runtime
counts about it (mailbox size, messages handled, restarts) is read without a
message, `ActorRef.stats()` (`process_info`); what the actor holds itself
only comes as its answer to the message `Describe` (`sys:get_status`).

An actor with no mail holds no greenlet (Erlang's hibernation, Akka's
dispatchers): the mailbox is a deque, and the first message into an empty
one puts the actor in the dispatcher's run queue (actors/runtime/dispatcher.py),
whose workers run it a turn at a time until its mailbox is empty. An idle room or session is
a small object, and a fan-out wakes no greenlet per receiver.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import AsyncResult, Event

from actors import logfmt
from actors.runtime.dispatcher import dispatcher
from actors.runtime.faults import Faults
from actors.runtime.tracing import Trace, tracing

if TYPE_CHECKING:
    from actors.runtime.supervisor import Supervisor

log = logging.getLogger("nane.actors")

DEFAULT_ASK_TIMEOUT = 5.0
# Messages an actor handles in one turn before the actors queued behind it get theirs
# (Akka's "throughput"): a registry with a backlog lets the hub and the sessions keep up
# instead of filling their mailboxes first.
TURN = 64


class ActorError(Exception):
    """Base of the errors the actor runtime raises."""


class ActorStopped(ActorError):
    """The actor has stopped: it takes no more messages, and pending asks fail."""


class MailboxFull(ActorError):
    """The actor's bounded mailbox is full; the message was not delivered."""


class AskTimeout(ActorError):
    """The actor did not answer an ask in time."""


class _Ask:
    """An ask on its way: the message and where its reply goes. A tell travels bare."""

    __slots__ = ("message", "reply")

    def __init__(self, message: Any, reply: AsyncResult):
        self.message = message
        self.reply = reply


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


class Describe:
    """Ask any actor `Describe()`: it answers with its `describe()`, in a turn of its own.

    The only way to see an actor's own state from outside, as Erlang's
    `sys:get_status` is: a message, answered by the runtime inside the actor's
    turn, even while the actor is paused (a suspended Erlang process still
    answers it). Like `Probe`, it is not traced and not counted as handled.
    """

    __slots__ = ()


class Actor:
    """Subclass this: keep state in attributes, answer messages in `receive`.

    Args:
        name: shown in logs and in the actor view.
        mailbox_limit: at most this many waiting messages (None: unbounded).
            A `tell` or `ask` beyond it raises `MailboxFull` in the sender at
            once, so a flooded actor never blocks the one that floods it.
        mailbox_bytes: at most this many bytes waiting, as `weigh` counts
            them (None: no byte budget); beyond it, `MailboxFull` as above.
    """

    # Slots, not a __dict__: there is one actor per room and per connection (subclasses
    # that add state declare theirs, or get a __dict__ as usual).
    __slots__ = ("name", "ref", "_mailbox", "_mailbox_limit", "_mailbox_bytes", "_weight",
                 "_has_room", "_started", "_scheduled", "_worker", "_killed", "_supervised_by",
                 "_recent_restarts", "_done", "_running", "_stopped", "_handled", "_failures",
                 "_restarts", "_trace", "_faults")

    kind = "actor"
    # An actor that gets mail rarely (a room) drops its empty mailbox between turns, as an
    # Erlang process hibernates: an idle one is then its state and little else. Busy actors
    # (sessions) keep theirs, or every delivery would allocate one.
    hibernate = False

    def __init__(self, name: str, mailbox_limit: int | None = None,
                 mailbox_bytes: int | None = None):
        self.name = name
        self.ref = ActorRef(self)
        self._mailbox: deque | None = None if self.hibernate else deque()
        self._mailbox_limit = mailbox_limit
        self._mailbox_bytes = mailbox_bytes
        self._weight = 0  # bytes waiting, when there is a byte budget
        self._has_room: Event | None = None  # set when a full mailbox has room again (if awaited)
        self._started = False  # the runtime called on_start (again after a restart)
        self._scheduled = False  # in the run queue or being run: mail will be handled
        self._worker: gevent.Greenlet | None = None  # the greenlet running us now, if any
        self._killed: Any = None  # kill's reason, until a worker acts on it
        self._supervised_by: Supervisor | None = None
        self._recent_restarts: deque[float] | None = None  # the supervisor's window
        self._done: Event | None = None  # made by the first `join`
        self._running = False
        self._stopped = False
        self._handled = 0
        self._failures = 0
        self._restarts = 0
        self._trace: Trace | None = None  # what the actor view shows; made when someone watches
        self._faults: Faults | None = None  # made by the first fault injected on purpose

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
                  type(message).__name__, logfmt.value(repr(error)), exc_info=error)

    def weigh(self, message: Any) -> int:
        """The bytes `message` counts against `mailbox_bytes` (only called when it is set).

        It gets what goes into the mailbox, so an ask arrives wrapped: weigh what you know.
        """
        return 0

    def describe(self) -> dict:
        """The actor's own state, for the actor view and the metrics: the answer to `Describe`."""
        return {}

    # -- lifecycle ------------------------------------------------------------

    def start(self, supervisor: Supervisor | None = None) -> ActorRef:
        """Make the actor live (`on_start` runs soon, in a worker) and return its reference."""
        if self._running or self._stopped:
            raise ActorError(f"{self.name} was already started")
        self._running = True
        self._supervised_by = supervisor
        self._wake()
        return self.ref

    def _wake(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            dispatcher().schedule(self)

    def _run(self) -> None:
        """One turn: handle up to TURN messages (called by a dispatcher worker)."""
        self._worker = gevent.getcurrent()
        try:
            if self._killed is None and not self._started:
                self._started = True
                self.on_start()
            mailbox = self._mailbox
            turn = TURN
            faults = self._faults
            if faults is not None and faults.crash:
                faults.before_message(self.name)  # raises: a crash needs no mail
            while self._killed is None and mailbox and turn:
                if faults is not None and faults.before_message(self.name):
                    self._answer_while_paused(mailbox, faults)
                    break
                turn -= 1
                message = mailbox.popleft()
                if self._mailbox_bytes is not None:
                    self._weight -= self.weigh(message)
                if self._has_room is not None:
                    self._has_room.set()
                kind = type(message)
                if kind is _Stop:
                    self._finish(message.reason)
                    return
                if kind is _Ask:
                    self._answer(message)
                else:
                    self._handle(message)
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
                if self.hibernate and not self._mailbox:
                    self._mailbox = None

    def _again(self) -> bool:
        """After a turn: queue up again for mail still waiting, a kill, or a restart's on_start."""
        if self._stopped:
            return False
        if self._started and self._killed is None:
            faults = self._faults
            if faults is None:
                if not self._mailbox:
                    return False
            elif not faults.crash and (faults.paused or not self._mailbox):
                return False
        dispatcher().schedule(self)
        return True

    def _answer_while_paused(self, mailbox: deque, faults: Faults) -> None:
        """Paused: answer the `Describe`s waiting; every other message stays where it is.

        Only the messages that came in since the last look are searched (from
        the newest back), so mail piling up on a paused actor costs no more
        than it did.
        """
        for index in range(len(mailbox) - 1, min(faults.seen, len(mailbox)) - 1, -1):
            message = mailbox[index]
            if type(message) is _Ask and type(message.message) is Describe:
                del mailbox[index]
                if self._mailbox_bytes is not None:
                    self._weight -= self.weigh(message)
                if self._has_room is not None:
                    self._has_room.set()
                self._answer(message)
        faults.seen = len(mailbox)

    def _handle(self, message: Any) -> None:
        if tracing.on:
            self._remember(message)
        try:
            self.receive(message)
        except Exception as error:  # one bad message must not take the actor down
            self._failures += 1
            self.on_failure(message, error)
        finally:
            self._handled += 1

    def _answer(self, ask: _Ask) -> None:
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
        if tracing.on:
            self._remember(message)
        try:
            result = self.receive(message)
        except Exception as error:
            self._failures += 1
            reply.set_exception(error)
        else:
            reply.set(result)
        finally:
            self._handled += 1

    def _remember(self, message: Any) -> None:
        """Keep `message` for the actor view (called only while tracing is on)."""
        if self._trace is None:
            self._trace = Trace()
        self._trace.remember(message)

    def _pending(self, kind: type | None = None) -> list[Any]:
        """Take the tells already waiting, up to the next ask or stop (for batching).

        With `kind`, only the leading tells of that type: the first message of
        another type stops the batch and waits for its own turn, so a batch is
        never a mix a handler might mistake for one kind.
        """
        taken: list[Any] = []
        mailbox = self._mailbox
        if self._faults is not None and (self._faults.delay or self._faults.paused):
            return taken  # slowed down: every message waits its own delay
        while mailbox and type(mailbox[0]) not in (_Ask, _Stop) and (
                kind is None or isinstance(mailbox[0], kind)):
            taken.append(mailbox.popleft())
        if taken:
            if self._mailbox_bytes is not None:
                self._weight -= sum(map(self.weigh, taken))
            if self._has_room is not None:
                self._has_room.set()
            if tracing.on:
                for message in taken:
                    self._remember(message)
        return taken

    def _crashed(self, error: BaseException) -> None:
        """A run ended by an exception from outside a message's own error handling."""
        self._started = False  # a restart runs on_start again, as a new greenlet would
        if self._supervised_by is None:
            log.error("event=actor_died actor=%s error=%s", logfmt.value(self.name),
                      logfmt.value(repr(error)), exc_info=error)
            self._finish("died")
        elif not self._supervised_by.may_restart(self, error):
            self._give_up("too many restarts")

    def _finish(self, reason: Any) -> None:
        """Stop for good: run on_stop once and fail every ask still waiting."""
        if self._stopped:
            return
        self._stopped = True
        self._running = False
        try:
            self.on_stop(reason)
        except _Killed:
            pass  # killed while stopping: it is stopping anyway
        except Exception:
            log.exception("event=on_stop_failed actor=%s", logfmt.value(self.name))
        finally:
            while self._mailbox:
                message = self._mailbox.popleft()
                if type(message) is _Ask:
                    message.reply.set_exception(ActorStopped(f"{self.name} stopped"))
            self._weight = 0
            if self._has_room is not None:
                self._has_room.set()
            if self._done is not None:
                self._done.set()

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
        return len(self._actor._mailbox or ())

    def tell(self, message: Any, wait: float = 0.0) -> None:
        """Deliver `message` and return at once.

        Args:
            wait: when the mailbox is full, wait up to this many seconds for
                room instead of refusing at once (backpressure: a reader that
                waits here stops reading its socket, and TCP slows its client).

        Raises:
            ActorStopped: the actor has stopped.
            MailboxFull: the actor's mailbox is at its limit (after `wait`).
        """
        if wait > 0 and self._full(message):
            self._wait_for_room(message, wait)
        self._post(message)

    def ask(self, message: Any, timeout: float = DEFAULT_ASK_TIMEOUT) -> Any:
        """Deliver `message` and wait for the actor's reply.

        Raises:
            ActorStopped, MailboxFull: as for `tell`, or the actor stopped
                before it answered.
            AskTimeout: no reply within `timeout` seconds.
            Exception: whatever the actor raised while handling the message.
        """
        reply = AsyncResult()
        self._post(_Ask(message, reply))
        try:
            return reply.get(timeout=timeout)
        except gevent.Timeout:
            raise AskTimeout(f"{self.name} did not answer within {timeout}s") from None

    def _post(self, message: Any) -> None:
        actor = self._actor
        if not actor._running:
            raise ActorStopped(f"{actor.name} is stopped")
        limit = actor._mailbox_limit
        mailbox = actor._mailbox
        if mailbox is None:
            mailbox = actor._mailbox = deque()
        if limit is not None and len(mailbox) >= limit:
            raise MailboxFull(f"{actor.name} has {limit} messages waiting")
        if actor._mailbox_bytes is not None:
            weight = actor.weigh(message)
            if weight and actor._weight + weight > actor._mailbox_bytes and mailbox:
                raise MailboxFull(f"{actor.name} has {actor._weight} bytes waiting")
            actor._weight += weight
        mailbox.append(message)
        if not actor._scheduled:
            actor._wake()

    def _wait_for_room(self, message: Any, seconds: float) -> None:
        """Block until the mailbox has room for `message`, the actor stops, or `seconds` pass."""
        actor = self._actor
        with gevent.Timeout(seconds, False):
            while actor._running and self._full(message):
                if actor._has_room is None:
                    actor._has_room = Event()
                actor._has_room.clear()
                actor._has_room.wait()

    def _full(self, message: Any) -> bool:
        actor = self._actor
        if actor._mailbox_limit is not None and len(actor._mailbox or ()) >= actor._mailbox_limit:
            return True
        if actor._mailbox_bytes is None or not actor._mailbox:
            return False
        weight = actor.weigh(message)
        return bool(weight) and actor._weight + weight > actor._mailbox_bytes

    def stop(self, reason: Any = "stopped") -> None:
        """Stop after the messages already sent; later ones are refused.

        The stop sentinel goes in even past the mailbox limit; `on_stop` gets
        `reason` (a session closes its websocket with it after its outbox drains).
        """
        actor = self._actor
        if actor._running:
            actor._running = False
            if actor._mailbox is None:
                actor._mailbox = deque()
            actor._mailbox.append(_Stop(reason))
            actor._wake()

    def kill(self, reason: Any) -> None:
        """Stop now, even in the middle of a message (e.g. a write that hangs).

        `on_stop(reason)` still runs, in a worker greenlet; asks still waiting fail.
        """
        actor = self._actor
        if actor._stopped or actor._killed is not None:
            return
        actor._running = False
        actor._killed = reason
        worker = actor._worker
        if worker is None:
            actor._wake()  # a worker will finish it
        else:  # it is inside a message, maybe blocked: interrupt it there
            gevent.get_hub().loop.run_callback(_interrupt, actor, worker, reason)

    # -- faults on purpose (app/ops/controls.py uses these; the actor itself never knows) --

    def pause(self) -> None:
        """Handle no more mail until `resume`: it piles up.

        A kill and a crash still act, and `Describe` is still answered.
        """
        faults = self._faults_of()
        faults.paused = True
        faults.seen = 0

    def resume(self) -> None:
        """Handle the mail that piled up, in order, and go on as before."""
        actor = self._actor
        self._faults_of().paused = False
        if actor._mailbox and not actor._stopped:
            actor._wake()

    def slow_down(self, seconds: float) -> None:
        """Every message from now on waits `seconds` more before it is handled (0: no more)."""
        self._faults_of().delay = max(0.0, seconds)

    def crash(self) -> None:
        """Make the actor's run die before its next message, as a bug or a kill from outside would.

        The supervisor then restarts it with its state and its mailbox as they
        were (or gives up); an unsupervised actor stops.
        """
        actor = self._actor
        if actor._running:
            self._faults_of().crash = True
            actor._wake()

    def _faults_of(self) -> Faults:
        actor = self._actor
        if actor._faults is None:
            actor._faults = Faults()
        return actor._faults

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the actor has stopped (on_stop done); True if it has."""
        actor = self._actor
        if not actor._stopped:
            if actor._done is None:
                actor._done = Event()
            actor._done.wait(timeout)
        return actor._stopped

    def stats(self) -> dict:
        """What the runtime counts about the actor, like Erlang's `process_info`.

        Not the actor's own state (ask it `Describe()` for that): reading them
        sends no message and never waits, so a paused or swamped actor shows
        them too. `recent` lists the last messages handled while tracing was
        on (oldest first), or nothing.
        """
        actor = self._actor
        return {
            "name": actor.name,
            "kind": actor.kind,
            "alive": actor._running,
            "mailbox": len(actor._mailbox or ()),
            "mailbox_limit": actor._mailbox_limit,
            "handled": actor._handled,
            "failures": actor._failures,
            "restarts": actor._restarts,
            "recent": actor._trace.recent() if actor._trace is not None else [],
            "paused": actor._faults is not None and actor._faults.paused,
            "slow_ms": round(actor._faults.delay * 1000) if actor._faults is not None else 0,
        }

    def __repr__(self) -> str:
        return f"<ActorRef {self.name}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other._actor is self._actor

    def __hash__(self) -> int:
        return id(self._actor)


class _Killed(BaseException):
    """Raised inside the worker running an actor, by `ActorRef.kill`."""

    def __init__(self, reason: Any):
        super().__init__(reason)
        self.reason = reason


def ask_all(refs: Iterable[ActorRef], message: Any, timeout: float) -> dict[ActorRef, Any]:
    """Ask every actor in `refs` the same `message` at once, and wait for the replies together.

    Scatter-gather: a hundred asks cost one `timeout` at most, not a hundred.

    Returns:
        The replies that came within `timeout`, by reference. An actor that was
        stopped or full, raised, or did not answer in time is missing from it.
    """
    waiting = {}
    for ref in refs:
        reply = AsyncResult()
        try:
            ref._post(_Ask(message, reply))
        except ActorError:
            continue
        waiting[ref] = reply
    deadline = time.monotonic() + timeout
    replies = {}
    for ref, reply in waiting.items():
        reply.wait(max(0.0, deadline - time.monotonic()))
        if reply.successful():
            replies[ref] = reply.value
    return replies


def _interrupt(actor: Actor, worker: gevent.Greenlet, reason: Any) -> None:
    """In gevent's hub: throw `_Killed` into `worker` if it is still inside `actor`."""
    still_inside = actor._worker is worker and not actor._stopped
    if still_inside and not worker.dead:
        worker.throw(_Killed(reason))


__all__ = [
    "Actor", "ActorRef", "ActorError", "ActorStopped", "MailboxFull", "AskTimeout", "Probe",
    "Describe", "ask_all",
    "DEFAULT_ASK_TIMEOUT",
]
