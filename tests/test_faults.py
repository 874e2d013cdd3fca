"""The runtime's fault methods and the actors' fault messages, without a network.

What app/ops/controls.py relies on: a crash restarts the same actor with its
state and mailbox, a pause piles mail up and a resume drains it in order, a
slowed actor takes its delay per message, a room its supervisor gave up on is
forgotten and the next message makes a fresh one, and held deliveries keep
their order.
"""

from __future__ import annotations

import gevent
import pytest

from actors.chat.hub import DelayDelivery, HubActor, Join
from actors.chat.message import Draft
from actors.chat.registry import FindRoom, ForgetRooms, ListRooms, Post, RegistryActor
from actors.chat.room import GetHistory
from actors.chat.session import SessionActor
from actors.runtime.actor import ActorStopped, Describe, Probe
from actors.runtime.supervisor import Supervisor
from tests.test_actors import TIMEOUT, ListTransport, Recorder


def wait_until(condition, what: str):
    """Cooperative wait inside this one gevent hub (the actors run meanwhile)."""
    with gevent.Timeout(TIMEOUT, AssertionError(f"timed out waiting for {what}")):
        while not condition():
            gevent.sleep(0.001)


def listening_chat():
    """A hub, a registry, and one session whose frames land in a list."""
    hub = HubActor().start()
    transport = ListTransport()
    session = SessionActor("session:1", transport, "ann", max_outbox=100).start()
    hub.tell(Join(session))
    return hub, transport, RegistryActor(hub, 10, 10).start()


def test_crash_restarts_the_same_actor_with_its_state_and_mailbox():
    recorder = Recorder()
    ref = recorder.start(Supervisor("test"))
    ref.tell("kept")
    ref.ask(Probe(), timeout=TIMEOUT)
    ref.pause()
    for n in range(3):
        ref.tell(n)
    ref.crash()
    wait_until(lambda: ref.stats()["restarts"] == 1, "the restart")
    assert ref.alive and ref.stats()["mailbox"] == 3  # nothing lost in the crash
    ref.resume()
    assert ref.ask("seen", timeout=TIMEOUT) == ["kept", 0, 1, 2]


def test_an_unsupervised_actor_that_crashes_stops():
    ref = Recorder().start()
    ref.crash()
    assert ref.join(TIMEOUT) and not ref.alive


def test_pause_piles_mail_up_and_resume_drains_it_in_order():
    ref = Recorder().start()
    ref.pause()
    for n in range(100):
        ref.tell(n)
    gevent.sleep(0.01)
    assert ref.stats()["mailbox"] == 100 and ref.stats()["paused"] is True
    ref.resume()
    assert ref.ask("seen", timeout=TIMEOUT) == list(range(100))
    assert ref.stats()["paused"] is False


def test_a_paused_actor_still_answers_describe_and_handles_nothing_else():
    ref = Recorder().start()
    ref.tell("before")
    ref.ask(Probe(), timeout=TIMEOUT)
    ref.pause()
    for n in range(50):
        ref.tell(n)
    # As a suspended Erlang process answers sys:get_status: in its own turn, out of order.
    assert ref.ask(Describe(), timeout=TIMEOUT) == {"seen": 1}
    ref.tell("after")
    assert ref.ask(Describe(), timeout=TIMEOUT) == {"seen": 1}
    assert ref.stats()["mailbox"] == 51
    ref.resume()
    assert ref.ask("seen", timeout=TIMEOUT) == ["before", *range(50), "after"]


def test_a_slowed_actor_waits_its_delay_for_every_message():
    ref = Recorder().start()
    ref.slow_down(0.02)
    assert ref.stats()["slow_ms"] == 20
    started = gevent.get_hub().loop.now()
    for n in range(5):
        ref.tell(n)
    assert ref.ask("seen", timeout=TIMEOUT) == [0, 1, 2, 3, 4]
    gevent.get_hub().loop.update_now()
    assert gevent.get_hub().loop.now() - started >= 0.1  # six messages, 20 ms each at least
    ref.slow_down(0)
    assert ref.stats()["slow_ms"] == 0


def test_a_slowed_session_writes_one_frame_per_delay_so_its_outbox_fills():
    transport = ListTransport()
    session = SessionActor("session:slow", transport, "slow", max_outbox=5).start()
    session.slow_down(0.05)
    hub = HubActor().start()
    hub.tell(Join(session))
    registry = RegistryActor(hub, 10, 10).start()
    for n in range(20):
        registry.tell(Post(Draft("r", f"m{n}"), "ann"))
    assert session.join(TIMEOUT)
    assert transport.closed_with == (1008, "slow consumer")
    assert hub.ask(Describe(), timeout=TIMEOUT)["slow_consumers"] == 1


def test_a_room_given_up_on_is_forgotten_and_the_next_message_makes_a_fresh_one():
    hub, transport, registry = listening_chat()
    registry.tell(Post(Draft("Lobby", "before"), "ann"))
    room = registry.ask(FindRoom("lobby"), timeout=TIMEOUT).actor
    assert room.ask(Probe(), timeout=TIMEOUT)
    for crash in range(6):  # the supervisor allows 5 restarts in 10 s
        room.crash()
        wait_until(lambda crash=crash: not room.alive or room.stats()["restarts"] == crash + 1, "a restart")
    assert not room.alive and room.stats()["restarts"] == 5
    with pytest.raises(ActorStopped):
        room.ask(GetHistory(), timeout=TIMEOUT)
    wait_until(lambda: registry.ask(FindRoom("lobby"), timeout=TIMEOUT) is None, "forgetting")
    assert registry.ask(ListRooms(), timeout=TIMEOUT) == ()

    registry.tell(Post(Draft("lobby", "after"), "ann"))
    fresh = registry.ask(FindRoom("lobby"), timeout=TIMEOUT)
    assert fresh.name == "lobby" and fresh.actor != room and fresh.actor.alive
    assert b'"after"' in fresh.actor.ask(GetHistory(), timeout=TIMEOUT)
    assert b'"before"' not in fresh.actor.ask(GetHistory(), timeout=TIMEOUT)
    # Every message reached the connection, the one before the give-up too.
    wait_until(lambda: len(transport.frames) == 2, "both messages")
    assert [f["text"] for f in transport.frames] == ["before", "after"]


def test_a_post_that_finds_a_dead_room_before_the_registry_hears_of_it_is_not_lost():
    hub = HubActor().start()
    registry = RegistryActor(hub, 10, 10).start()
    registry.tell(Post(Draft("r", "one"), "ann"))
    room = registry.ask(FindRoom("r"), timeout=TIMEOUT).actor
    registry.pause()  # the registry will hear of the give-up only after the next post
    for _ in range(6):
        before = room.stats()["restarts"]
        room.crash()
        wait_until(lambda before=before: not room.alive or room.stats()["restarts"] > before,
                   "a restart")
    registry.tell(Post(Draft("r", "two"), "ann"))
    registry.resume()
    fresh = registry.ask(FindRoom("r"), timeout=TIMEOUT)
    assert fresh.actor.alive and b'"two"' in fresh.actor.ask(GetHistory(), timeout=TIMEOUT)
    assert registry.stats()["failures"] == 0


def test_forget_rooms_drops_every_room():
    hub = HubActor().start()
    registry = RegistryActor(hub, 10, 10).start()
    for name in ("a", "b"):
        registry.tell(Post(Draft(name, "x"), "ann"))
    assert registry.ask(ForgetRooms(), timeout=TIMEOUT) == 2
    assert registry.ask(ListRooms(), timeout=TIMEOUT) == ()


def test_delayed_delivery_keeps_order_when_the_delay_changes():
    hub, transport, registry = listening_chat()
    assert hub.ask(DelayDelivery(0.2), timeout=TIMEOUT) == 0.2
    registry.tell(Post(Draft("r", "held"), "ann"))
    wait_until(lambda: hub.ask(Describe(), timeout=TIMEOUT)["held"] == 1, "the hub to hold it")
    assert transport.frames == []
    hub.ask(DelayDelivery(0), timeout=TIMEOUT)
    registry.tell(Post(Draft("r", "behind"), "ann"))  # no delay now, but behind the held one
    wait_until(lambda: len(transport.frames) == 2, "both messages")
    assert [f["text"] for f in transport.frames] == ["held", "behind"]
    assert hub.ask(Describe(), timeout=TIMEOUT)["held"] == 0
