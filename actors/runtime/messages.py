"""What travels between actors besides the messages themselves, and what can go wrong on the way.

A `tell` puts the message itself in the mailbox: nothing is wrapped, nothing
allocated. An `ask` needs somewhere for the reply to go, so it travels as an
`Ask`; a `stop` must queue up behind the mail already sent, so it travels as
a `Stop`. `Probe` and `Describe` are questions every actor answers without
its own code knowing them, as every Erlang process answers `sys:get_status`.
"""

from __future__ import annotations

from typing import Any

from gevent.event import AsyncResult


class ActorError(Exception):
    """Base of the errors the actor runtime raises."""


class ActorStopped(ActorError):
    """The actor has stopped: it takes no more messages, and pending asks fail."""


class MailboxFull(ActorError):
    """The actor's bounded mailbox is full; the message was not delivered."""


class AskTimeout(ActorError):
    """The actor did not answer an ask in time."""


class Ask:
    """An ask on its way: the message and where its reply goes."""

    __slots__ = ("message", "reply")

    def __init__(self, message: Any, reply: AsyncResult):
        self.message = message
        self.reply = reply


class Stop:
    """What `stop` puts behind all earlier messages, with the reason `on_stop` gets."""

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


def is_describe(message: Any) -> bool:
    """True for an ask of `Describe()`: the one message a paused actor still answers."""
    return type(message) is Ask and type(message.message) is Describe
