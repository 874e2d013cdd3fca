"""The connection's reader (actors/chat/connection.py) without a network: frames in, frames and counts out."""

from __future__ import annotations

import json
from dataclasses import dataclass

import gevent
import gevent.event

from actors.chat.connection import ConnectionLimits, end_reason, serve
from actors.chat.hub import HubActor
from actors.chat.message import Frame
from actors.chat.registry import RegistryActor
from actors.chat.session import PING_TIMEOUT, Disconnect
from actors.runtime.actor import ActorRef


class ScriptedTransport:
    """Gives the reader `incoming` one by one, then waits until closed; records what is written."""

    def __init__(self, incoming: list[str | bytes]) -> None:
        self.incoming = list(incoming)
        self.sent: list[dict[str, object]] = []
        self.closed = gevent.event.Event()
        self.error_code: int | None = None
        self.admit_control = lambda: True

    def receive(self) -> str | bytes | None:
        if self.incoming:
            return self.incoming.pop(0)
        self.closed.wait(timeout=2)
        return None

    def refuse(self, code: int, reason: str) -> None:
        self.error_code = code
        self.closed.set()

    def send(self, frames: list[Frame]) -> None:
        self.sent.extend(json.loads(frame.json) for frame in frames)
        if len(self.sent) >= 3:
            self.closed.set()

    def ping(self) -> None:
        pass

    def answered(self) -> bool:
        return True

    def close(self, code: int, reason: str) -> None:
        self.closed.set()

    def go_silent(self) -> None:
        pass


class Share:
    per_second = 1000

    def admit_message(self, now: float, characters: int) -> bool:
        return True

    def admit_resume(self, now: float) -> bool:
        return True


@dataclass
class Actors:
    """The two actors a reader talks to, and its limits (what `Chat` holds)."""

    hub: ActorRef
    registry: ActorRef
    limits: ConnectionLimits


class Counts:
    def __init__(self) -> None:
        self.events: list[str] = []

    def opened(self) -> None:
        self.events.append("opened")

    def received(self) -> None:
        self.events.append("received")

    def dropped(self, kind: str) -> None:
        self.events.append(f"dropped:{kind}")

    def closed(self, reason: str) -> None:
        self.events.append(f"closed:{reason}")


def test_a_ping_a_post_and_a_bad_frame_from_socket_to_every_receiver() -> None:
    hub = HubActor().start()
    registry = RegistryActor(hub, 10, 10).start()
    transport = ScriptedTransport(['{"ping":true}', '{"room":"r","text":"hi","id":"1"}',
                                   "not json"])
    counts = Counts()
    try:
        serve(Actors(hub, registry, ConnectionLimits()), transport, "ann", "10.0.0.1", v2=True,
              share=Share(), observer=counts, stopping=lambda: False)
    finally:
        registry.stop()
        hub.stop()
    assert transport.sent[0] == {"pong": True}
    assert any(frame.get("text") == "hi" for frame in transport.sent)
    assert any("error" in frame for frame in transport.sent), transport.sent
    assert counts.events[:4] == ["opened", "received", "received", "received"]
    assert "dropped:invalid_json" in counts.events and counts.events[-1] == "closed:client"


def test_end_reasons_name_the_cut_off_first_then_the_close_code() -> None:
    assert end_reason(PING_TIMEOUT, None) == "ping_timeout"
    assert end_reason(Disconnect(1000, "fault control"), None) == "control"
    assert end_reason(None, 1009) == "too_large"
    assert end_reason(None, None) == "client"
