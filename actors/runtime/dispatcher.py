"""The dispatcher: a few greenlets that run whichever actors have mail, Akka-style.

An actor with no mail holds no greenlet: it is an object and a deque. When
mail arrives for an idle actor, the actor joins the run queue; a worker
greenlet takes it, hands it its mail (a turn of up to `TURN` messages, actor.py;
an actor with more queues up again behind the others), and moves on to the
next actor. One fan-out to 5,000 sessions is then one greenlet walking
5,000 mailboxes, not 5,000 greenlet switches.

A handler may block (a socket write waits for the kernel, an `ask` waits for
a reply). Whenever the running worker blocks, gevent's hub runs, and the
hub's callback `_watch` sees the run queue still holding actors and wakes or
spawns another worker: a blocked actor delays nobody but itself. Each actor
is in the run queue at most once and run by one worker at a time, so "one
message at a time" holds whatever the number of workers.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from gevent import get_hub, getcurrent
from greenlet import greenlet

MAX_IDLE_WORKERS = 8  # parked workers kept for the next burst; more end


class Runnable(Protocol):
    """What the dispatcher runs: an actor, a turn at a time."""

    def run_turn(self) -> None: ...


class Dispatcher:
    """The run queue of actors with mail, and the worker greenlets that drain it."""

    def __init__(self) -> None:
        self._ready: deque[Runnable] = deque()
        self._idle: list[greenlet] = []  # parked worker greenlets, the most recently parked last
        self._watching = False
        self._loop = get_hub().loop
        self.workers = 0  # live worker greenlets, parked ones included

    def schedule(self, actor: Runnable) -> None:
        """`actor` has mail (or must stop): run it soon. Call once until it is run."""
        self._ready.append(actor)
        if not self._watching:
            self._watching = True
            self._loop.run_callback(self._watch)

    def _watch(self) -> None:
        """In gevent's hub: every worker is parked or blocked, so wake one if actors wait."""
        self._watching = False
        if not self._ready:
            return
        while self._idle:
            worker = self._idle.pop()
            if not worker.dead:
                worker.switch()  # we are in the hub: a plain switch, as gevent's Waiter does
                return
        self.workers += 1
        greenlet(self._work, get_hub()).switch()  # runs at once, up to its first wait

    def _work(self) -> None:
        me = getcurrent()
        hub = get_hub()
        ready = self._ready
        try:
            while True:
                while ready:
                    actor = ready.popleft()
                    if ready and not self._watching:  # if this actor blocks, the rest go on
                        self._watching = True
                        self._loop.run_callback(self._watch)
                    actor.run_turn()
                if len(self._idle) >= MAX_IDLE_WORKERS:
                    return
                self._idle.append(me)
                hub.switch()  # parked until `_watch` switches back
        finally:
            self.workers -= 1
            if me in self._idle:
                self._idle.remove(me)
            if ready and not self._watching:  # killed with work left: hand it on
                self._watching = True
                self._loop.run_callback(self._watch)


_dispatcher: Dispatcher | None = None


def dispatcher() -> Dispatcher:
    """The one dispatcher of this process (made on first use, after any fork)."""
    global _dispatcher
    if _dispatcher is None:
        _dispatcher = Dispatcher()
    return _dispatcher
