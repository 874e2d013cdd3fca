"""The chat as a whole: start the actors, wire them together, hand out their references."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from actors.actor import ActorRef
from actors.hub import HubActor
from actors.kozma import KozmaActor
from actors.registry import RegistryActor
from actors.supervisor import Supervisor


@dataclass(frozen=True)
class Chat:
    """The long-lived actors every connection and request talks to."""

    registry: ActorRef
    hub: ActorRef
    kozma: ActorRef | None

    def stop(self) -> None:
        for actor in (self.kozma, self.registry, self.hub):
            if actor is not None:
                actor.stop()


def start_chat(max_rooms: int, max_messages_in_room: int, kozma: bool = False,
               kozma_first_delay: float = 5.0, kozma_max_pause: float = 60.0,
               keepalive_tick: float | None = None,
               observe_fan_out: Callable[[float], None] | None = None) -> Chat:
    """Start the hub, the registry and (optionally) the bot under one supervisor.

    `keepalive_tick`: seconds between the hub's `KeepAlive` rounds (sessions ping
    their peers on them); `observe_fan_out` receives each message's fan-out time.
    """
    supervisor = Supervisor("chat")
    hub = HubActor(keepalive_tick, observe_fan_out).start(supervisor)
    registry = RegistryActor(hub, max_rooms, max_messages_in_room).start(supervisor)
    bot = None
    if kozma:
        bot = KozmaActor(registry, kozma_first_delay, kozma_max_pause).start(supervisor)
    return Chat(registry=registry, hub=hub, kozma=bot)
