"""The reference: the handle everyone else holds, and the only way into an actor.

Holding the actor object would let anyone call its methods from any greenlet,
and "one message at a time" would be gone. A reference can only send: `tell`
(fire and forget), `ask` (send, then wait for the reply), `stop` and `kill`.
Two ways to look at an actor from outside, as in Erlang: what the runtime
counts about it is read without a message, `stats()` (`process_info`); what
the actor holds itself only comes as its answer to `Describe`
(`sys:get_status`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import AsyncResult

from actors.runtime import faults
from actors.runtime.messages import ActorError, Ask, AskTimeout

if TYPE_CHECKING:
    from actors.runtime.actor import Actor

DEFAULT_ASK_TIMEOUT = 5.0


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
        return self._actor.alive

    @property
    def mailbox_size(self) -> int:
        """Messages waiting now (read without a message, for metrics)."""
        return len(self._actor.mailbox)

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
        mailbox = self._actor.mailbox
        if wait > 0:
            mailbox.wait_for_room(message, wait)
        mailbox.put(message)

    def ask(self, message: Any, timeout: float = DEFAULT_ASK_TIMEOUT) -> Any:
        """Deliver `message` and wait for the actor's reply.

        Raises:
            ActorStopped, MailboxFull: as for `tell`, or the actor stopped
                before it answered.
            AskTimeout: no reply within `timeout` seconds.
            Exception: whatever the actor raised while handling the message.
        """
        reply = self.request(message)
        try:
            return reply.get(timeout=timeout)
        except gevent.Timeout:
            raise AskTimeout(f"{self.name} did not answer within {timeout}s") from None

    def request(self, message: Any) -> AsyncResult:
        """An ask that does not wait: the reply (or the actor's exception) arrives in the result.

        Raises:
            ActorStopped, MailboxFull: as for `tell`.
        """
        reply = AsyncResult()
        self._actor.mailbox.put(Ask(message, reply))
        return reply

    def stop(self, reason: Any = "stopped") -> None:
        """Stop after the messages already sent; later ones are refused.

        The stop sentinel goes in even past the mailbox limit; `on_stop` gets
        `reason` (a session closes its websocket with it after its outbox drains).
        """
        self._actor.stop(reason)

    def kill(self, reason: Any) -> None:
        """Stop now, even in the middle of a message (e.g. a write that hangs).

        `on_stop(reason)` still runs, in a worker greenlet; asks still waiting fail.
        """
        self._actor.kill(reason)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the actor has stopped (on_stop done); True if it has."""
        return self._actor.join(timeout)

    # -- faults on purpose (the fault controls use these; the actor itself never knows) --

    def pause(self) -> None:
        """Handle no more mail until `resume`: it piles up.

        A kill and a crash still act, and `Describe` is still answered.
        """
        faults.pause(self._actor)

    def resume(self) -> None:
        """Handle the mail that piled up, in order, and go on as before."""
        faults.resume(self._actor)

    def slow_down(self, seconds: float) -> None:
        """Every message from now on waits `seconds` more before it is handled (0: no more)."""
        faults.slow_down(self._actor, seconds)

    def crash(self) -> None:
        """Make the actor's run die before its next message, as a bug or a kill from outside would.

        The supervisor then restarts it with its state and its mailbox as they
        were (or gives up); an unsupervised actor stops.
        """
        faults.crash(self._actor)

    def stats(self) -> dict[str, Any]:
        """What the runtime counts about the actor, like Erlang's `process_info`.

        Not the actor's own state (ask it `Describe()` for that): reading them
        sends no message and never waits, so a paused or swamped actor shows
        them too. `recent` lists the last messages handled while tracing was
        on (oldest first), or nothing.
        """
        actor = self._actor
        injected = actor.faults
        return {
            "name": actor.name,
            "kind": actor.kind,
            "alive": actor.alive,
            "mailbox": len(actor.mailbox),
            "mailbox_limit": actor.mailbox.limit,
            "handled": actor.handled,
            "failures": actor.failures,
            "restarts": actor.restarts,
            "recent": actor.trace.recent() if actor.trace is not None else [],
            "paused": injected is not None and injected.paused,
            "slow_ms": round(injected.delay * 1000) if injected is not None else 0,
        }

    def __repr__(self) -> str:
        return f"<ActorRef {self.name}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and hash(other) == hash(self)  # the same actor

    def __hash__(self) -> int:
        return id(self._actor)


def ask_all(refs: Iterable[ActorRef], message: Any, timeout: float) -> dict[ActorRef, Any]:
    """Ask every actor in `refs` the same `message` at once, and wait for the replies together.

    Scatter-gather: a hundred asks cost one `timeout` at most, not a hundred.

    Returns:
        The replies that came within `timeout`, by reference. An actor that was
        stopped or full, raised, or did not answer in time is missing from it.
    """
    waiting = {}
    for ref in refs:
        try:
            waiting[ref] = ref.request(message)
        except ActorError:
            continue
    deadline = time.monotonic() + timeout
    replies = {}
    for ref, reply in waiting.items():
        reply.wait(max(0.0, deadline - time.monotonic()))
        if reply.successful():
            replies[ref] = reply.value
    return replies
