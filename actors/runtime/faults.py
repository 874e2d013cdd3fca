"""Faults on purpose: a pause, a delay per message, a crash to come.

A classroom needs to watch an actor misbehave. The fault controls inject
faults through `ActorRef.pause`, `resume`, `slow_down` and `crash`, the way
Erlang's `sys:suspend` works on any process: the actor's own code never
knows. The functions here attach a `Faults` to the actor, and its loop
consults it before each message; an actor nobody touched has none, and pays
one `is None` test per message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gevent

from actors.runtime.messages import is_describe

if TYPE_CHECKING:
    from actors.runtime.actor import Actor


class InjectedCrash(Exception):
    """Raised by the runtime, outside any message's handling, when `ActorRef.crash` was called."""


class Faults:
    """What the controls injected into one actor.

    `seen` is for the paused actor: how many waiting messages it has already
    looked through for a `Describe`, so mail piling up costs no more than it did.
    """

    __slots__ = ("paused", "delay", "crash", "seen")

    def __init__(self) -> None:
        self.paused = False
        self.delay = 0.0
        self.crash = False
        self.seen = 0

    @property
    def one_at_a_time(self) -> bool:
        """Slowed down or paused: no batching, every message waits its own turn."""
        return bool(self.delay) or self.paused

    def before_turn(self, actor: Actor) -> None:
        """At the start of a turn: raise the crash to come, mail or not."""
        if self.crash:
            self.crash = False
            raise InjectedCrash(f"{actor.name} was crashed on purpose")

    def admit(self, actor: Actor) -> bool:
        """Before each message: crash, wait the delay; False while paused (the mail stays).

        Paused, the actor still answers the `Describe`s that came in since it last looked.
        """
        self.before_turn(actor)
        if self.paused:
            for ask in actor.mailbox.pick(is_describe, self.seen):
                actor.handle(ask)
            self.seen = len(actor.mailbox)
            return False
        if self.delay:
            gevent.sleep(self.delay)
        return True

    def has_work(self, actor: Actor) -> bool:
        """After a turn: a crash to come, or mail the actor may handle."""
        return self.crash or (not self.paused and bool(actor.mailbox))


def injected(actor: Actor) -> Faults:
    """`actor`'s faults, attached on the first one injected."""
    if actor.faults is None:
        actor.faults = Faults()
    return actor.faults


def pause(actor: Actor) -> None:
    faults = injected(actor)
    faults.paused = True
    faults.seen = 0


def resume(actor: Actor) -> None:
    injected(actor).paused = False
    if actor.mailbox and not actor.stopped:
        actor.mailbox.schedule()


def slow_down(actor: Actor, seconds: float) -> None:
    injected(actor).delay = max(0.0, seconds)


def crash(actor: Actor) -> None:
    if actor.alive:
        injected(actor).crash = True
        actor.mailbox.schedule()
