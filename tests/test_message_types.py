"""Each actor's message union says what its `receive` matches, no more and no less; a stray fails.

mypy checks one direction (a member of the union without a case fails the
type check); a case for a message left out of the union is only dead code to
it. These tests check both directions from the source, and that a message an
actor does not know still fails the asker with a `TypeError`, the actor living on.
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
from dataclasses import dataclass
from typing import get_args

import pytest

from actors.chat.hub import HubActor, HubMessage
from actors.chat.kozma import KozmaActor, KozmaMessage
from actors.chat.registry import RegistryActor, RegistryMessage
from actors.chat.room import RoomActor, RoomMessage
from actors.runtime.actor import Actor, ActorRef, Probe
from actors.shared_rooms.shared import (
    SharedDirectoryActor,
    SharedDirectoryMessage,
    SharedRegistryActor,
    SharedRegistryMessage,
    SharedRoomActor,
    SharedRoomMessage,
)

TIMEOUT = 2.0

UNIONS: list[tuple[type[Actor], object]] = [
    (HubActor, HubMessage),
    (RegistryActor, RegistryMessage),
    (RoomActor, RoomMessage),
    (KozmaActor, KozmaMessage),
    (SharedRoomActor, SharedRoomMessage),
    (SharedRegistryActor, SharedRegistryMessage),
    (SharedDirectoryActor, SharedDirectoryMessage),
]


def members(union: object) -> set[type]:
    """A union's classes (an alias of one class: that class)."""
    return set(get_args(union)) or {union}


def matched(actor: type[Actor]) -> set[type]:
    """The classes the cases of `actor.receive`'s `match` name, looked up in its module."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(actor.receive)))
    match = next(node for node in ast.walk(tree) if isinstance(node, ast.Match))
    scope = vars(sys.modules[actor.__module__])
    return {eval(ast.unparse(case.pattern.cls), scope) for case in match.cases
            if isinstance(case.pattern, ast.MatchClass)}


@pytest.mark.parametrize("actor, union", UNIONS, ids=[actor.__name__ for actor, _ in UNIONS])
def test_the_union_is_what_receive_matches(actor: type[Actor], union: object) -> None:
    assert matched(actor) == members(union)


@dataclass(frozen=True)
class Stray:
    """A message no actor knows."""


def started() -> list[ActorRef]:
    hub = HubActor().start()
    registry = RegistryActor(hub, max_rooms=10, max_messages_in_room=10).start()
    store = None  # an unknown message never reaches Redis
    return [hub, registry, RoomActor("lobby").start(),
            KozmaActor(registry, first_delay=3600, aphorisms=["…"]).start(),
            SharedRoomActor("lobby", store).start(),
            SharedRegistryActor(store).start(),
            SharedDirectoryActor(store, max_rooms=10).start()]


def test_a_stray_message_fails_the_asker_with_a_type_error_and_the_actor_lives_on() -> None:
    refs = started()
    try:
        for ref in refs:
            with pytest.raises(TypeError, match=r"cannot handle Stray\(\)"):
                ref.ask(Stray(), timeout=TIMEOUT)
            assert ref.ask(Probe(), timeout=TIMEOUT) is True
    finally:
        for ref in reversed(refs):
            ref.stop()
