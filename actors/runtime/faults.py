"""Faults on purpose: a pause, a delay per message, a crash to come.

The fault controls (app/ops/controls.py) inject them through `ActorRef.pause`,
`resume`, `slow_down` and `crash`, the way Erlang's `sys:suspend` works on any
process: the actor's own code never knows. An actor nobody touched has no
`Faults` at all, and its message loop pays one `is None` test per turn.
"""

from __future__ import annotations

import gevent


class InjectedCrash(Exception):
    """Raised by the runtime, outside any message's handling, when `ActorRef.crash` was called."""


class Faults:
    """What the controls injected into one actor.

    `seen` is for the paused actor's loop: how many waiting messages it has
    already looked through for a `Describe` (see `Actor._answer_while_paused`).
    """

    __slots__ = ("paused", "delay", "crash", "seen")

    def __init__(self):
        self.paused = False
        self.delay = 0.0
        self.crash = False
        self.seen = 0

    def before_message(self, name: str) -> bool:
        """Run before each message: raise the crash to come, wait the delay; True while paused."""
        if self.crash:
            self.crash = False
            raise InjectedCrash(f"{name} was crashed on purpose")
        if self.paused:
            return True
        if self.delay:
            gevent.sleep(self.delay)
        return False
