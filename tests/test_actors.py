"""The actor runtime, rooms and the registry, with no network: greenlets and queues only."""

from __future__ import annotations

import gc
import json
import time

import gevent
import greenlet
import pytest

from actors.chat.hub import HubActor, Join
from actors.chat.message import Clock, Draft, Frame
from actors.chat.registry import FindRoom, ListRooms, Post, RegistryActor
from actors.chat.room import GetHistory, RoomActor
from actors.chat.session import SLOW_CONSUMER, SessionActor, SessionEnded
from actors.runtime.actor import Actor, ActorStopped, AskTimeout, Describe, MailboxFull, Probe, ask_all
from actors.runtime.dispatcher import MAX_IDLE_WORKERS
from actors.runtime.supervisor import Supervisor

TIMEOUT = 2.0


class Recorder(Actor):
    """Remembers what it got; answers asks; can be told to fail or to hang."""

    def __init__(self, mailbox_limit=None):
        super().__init__("recorder", mailbox_limit=mailbox_limit)
        self.seen = []
        self.stopped_with = None

    def receive(self, message):
        match message:
            case "boom":
                raise ValueError("boom")
            case ("wait", event):
                event.wait(TIMEOUT)
            case "seen":
                return list(self.seen)
            case _:
                self.seen.append(message)
                return message

    def on_stop(self, reason):
        self.stopped_with = reason

    def describe(self):
        return {"seen": len(self.seen)}


def test_messages_are_handled_one_at_a_time_in_order():
    ref = Recorder().start()
    for i in range(100):
        ref.tell(i)
    assert ref.ask("seen", timeout=TIMEOUT) == list(range(100))


def test_ask_returns_the_reply_and_raises_the_actors_exception():
    ref = Recorder().start()
    assert ref.ask("hello", timeout=TIMEOUT) == "hello"
    with pytest.raises(ValueError, match="boom"):
        ref.ask("boom", timeout=TIMEOUT)
    assert ref.ask("still alive", timeout=TIMEOUT) == "still alive"
    assert ref.stats()["failures"] == 1


def test_a_failing_tell_is_reported_and_the_actor_goes_on(caplog):
    ref = Recorder().start()
    ref.tell("boom")
    assert ref.ask("next", timeout=TIMEOUT) == "next"
    assert "boom" in caplog.text


def test_ask_times_out():
    ref = Recorder().start()
    gate = gevent.event.Event()
    ref.tell(("wait", gate))
    with pytest.raises(AskTimeout):
        ref.ask("late", timeout=0.05)
    gate.set()


def test_stop_fails_pending_asks_and_refuses_new_messages():
    ref = Recorder().start()
    gate = gevent.event.Event()
    ref.tell(("wait", gate))
    waiting = gevent.spawn(ref.ask, "queued behind the stop?", TIMEOUT)
    gevent.sleep(0)  # let the ask reach the mailbox
    ref.stop()
    with pytest.raises(ActorStopped):
        ref.tell("after stop")
    gate.set()
    waiting.join(TIMEOUT)
    # the ask was queued before the stop, so it is answered; nothing is left hanging
    assert waiting.value == "queued behind the stop?"
    assert ref.join(TIMEOUT)
    with pytest.raises(ActorStopped):
        ref.ask("after", timeout=TIMEOUT)


def test_kill_interrupts_a_hanging_message_and_fails_asks_behind_it():
    actor = Recorder()
    ref = actor.start()
    never = gevent.event.Event()
    ref.tell(("wait", never))
    pending = gevent.spawn(ref.ask, "behind", TIMEOUT)
    gevent.sleep(0)
    ref.kill("enough")
    pending.join(TIMEOUT)
    assert isinstance(pending.exception, ActorStopped)
    assert ref.join(TIMEOUT) and actor.stopped_with == "enough"


def test_bounded_mailbox_refuses_at_once_instead_of_blocking():
    ref = Recorder(mailbox_limit=3).start()
    gate = gevent.event.Event()
    ref.tell(("wait", gate))
    gevent.sleep(0)  # the actor is now busy with the wait
    for i in range(3):
        ref.tell(i)
    with pytest.raises(MailboxFull):
        ref.tell("one too many")
    assert ref.stats()["mailbox"] == 3
    gate.set()
    wait_for(lambda: ref.stats()["mailbox"] == 0)
    assert ref.ask("seen", timeout=TIMEOUT) == [0, 1, 2]


def test_describe_is_answered_in_turn_and_stats_need_no_message():
    ref = Recorder().start()
    gate = gevent.event.Event()
    ref.tell(("wait", gate))
    ref.tell("one")
    asked = gevent.spawn(ref.ask, Describe(), TIMEOUT)
    gevent.sleep(0.01)
    # The actor is inside a message: its state comes only after it, in order; the
    # runtime's counters are there at once.
    assert not asked.ready() and ref.stats()["mailbox"] == 2
    gate.set()
    assert asked.get(timeout=TIMEOUT) == {"seen": 1}
    # Describe (like Probe) is the runtime's question: not the actor's work, not traced.
    assert ref.stats()["handled"] == 2
    assert "seen" not in ref.stats()


def test_ask_all_waits_once_and_leaves_out_who_cannot_answer():
    answering, stopped = Recorder().start(), Recorder().start()
    hanging = Recorder().start()
    gate = gevent.event.Event()
    hanging.tell(("wait", gate))
    stopped.stop()
    started = time.monotonic()
    replies = ask_all([answering, hanging, stopped], Describe(), 0.2)
    assert replies == {answering: {"seen": 0}}
    assert time.monotonic() - started < 0.2 + 0.15  # one timeout for all, not one each
    gate.set()


def kill_mid_message(actor, ref):
    """Kill the greenlet running `actor` while it is inside a message (a crash from outside)."""
    gate = gevent.event.Event()
    ref.tell(("wait", gate))
    wait_for(lambda: actor._worker is not None)
    gevent.kill(actor._worker)
    gevent.sleep(0)


def test_supervisor_restarts_a_dead_greenlet_with_its_state():
    actor = Recorder()
    ref = actor.start(Supervisor(max_restarts=3, within_seconds=10))
    ref.tell("kept")
    assert ref.ask("seen", timeout=TIMEOUT) == ["kept"]
    kill_mid_message(actor, ref)  # the greenlet dies, not by a message
    assert ref.ask("seen", timeout=TIMEOUT) == ["kept"]
    assert ref.stats()["restarts"] == 1 and ref.alive


def test_supervisor_gives_up_after_too_many_restarts(caplog):
    actor = Recorder()
    ref = actor.start(Supervisor(max_restarts=2, within_seconds=10))
    for _ in range(3):
        kill_mid_message(actor, ref)
    wait_for(lambda: not ref.alive)
    with pytest.raises(ActorStopped):
        ref.ask("anyone?", timeout=TIMEOUT)
    assert "event=supervisor_gives_up" in caplog.text


def test_an_actor_without_a_supervisor_that_dies_stops_and_fails_its_asks():
    actor = Recorder()
    ref = actor.start()
    gate = gevent.event.Event()
    ref.tell(("wait", gate))
    pending = gevent.spawn(ref.ask, "behind", TIMEOUT)
    wait_for(lambda: actor._worker is not None and ref.mailbox_size == 1)
    gevent.kill(actor._worker)
    pending.join(TIMEOUT)
    assert isinstance(pending.exception, ActorStopped)
    assert ref.join(TIMEOUT) and actor.stopped_with == "died"


def test_only_one_message_at_a_time_even_when_handlers_block():
    class Careful(Actor):
        def __init__(self):
            super().__init__("careful")
            self.inside = self.most_inside = 0
            self.order = []

        def receive(self, message):
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            gevent.sleep(0.0005 * (message[1] % 3))  # blocks: other workers run meanwhile
            self.order.append(message)
            self.inside -= 1

    actors = [Careful() for _ in range(3)]
    refs = [a.start() for a in actors]

    def sender(n):
        for i in range(30):
            for ref in refs:
                ref.tell((n, i))
            gevent.sleep(0)

    gevent.joinall([gevent.spawn(sender, n) for n in range(4)], timeout=TIMEOUT)
    for actor, ref in zip(actors, refs, strict=True):
        ref.ask(Probe(), timeout=TIMEOUT)
        assert actor.most_inside == 1
        assert len(actor.order) == 120
        for n in range(4):  # each sender's messages in the order sent
            assert [i for s, i in actor.order if s == n] == list(range(30))


def test_a_typed_batch_takes_only_leading_messages_of_its_type_and_loses_nothing():
    class Batcher(Actor):
        """Batches ints behind an int, as the Redis registry batches posts; strings alone."""

        def __init__(self):
            super().__init__("batcher")
            self.batches = []

        def receive(self, message):
            match message:
                case int():
                    self.batches.append([message, *self._pending(int)])
                case str():
                    self.batches.append([message])

    actor = Batcher()
    ref = actor.start()
    sent = []
    for i in range(200):  # every message goes in before the actor's first turn
        message = f"s{i}" if i % 7 == 3 else i
        sent.append(message)
        ref.tell(message)
    ref.ask(Probe(), timeout=TIMEOUT)
    assert [m for batch in actor.batches for m in batch] == sent  # nothing lost, in order
    assert all(len({type(m) for m in batch}) == 1 for batch in actor.batches)  # never mixed
    assert max(len(batch) for batch in actor.batches) > 1  # and still batched
    untyped = Batcher()  # the untyped call still takes every tell waiting (the session's)
    untyped.start()  # its first turn comes only when this greenlet yields
    untyped.ref.tell(("x",))
    untyped.ref.tell("y")
    untyped.ref.tell(1)
    assert untyped._pending() == [("x",), "y", 1]


def test_an_idle_actor_holds_no_greenlet_and_wakes_on_mail():
    before = live_greenlets()
    actors = [Recorder() for _ in range(500)]
    refs = [a.start() for a in actors]
    for n, ref in enumerate(refs):
        ref.tell(n)
    for ref in refs:
        ref.ask(Probe(), timeout=TIMEOUT)
    gevent.sleep(0.01)  # let the workers park
    assert all(a._worker is None and not a.mailbox.scheduled for a in actors)
    # 500 live actors, all idle: only the dispatcher's few parked workers exist
    assert live_greenlets() - before <= MAX_IDLE_WORKERS
    refs[7].tell("woken")
    assert refs[7].ask("seen", timeout=TIMEOUT) == [7, "woken"]


def test_a_hibernating_actor_drops_its_empty_mailbox_between_turns():
    class Sleepy(Recorder):
        hibernate = True

    actor = Sleepy()
    ref = actor.start()
    ref.tell("one")
    assert ref.ask("seen", timeout=TIMEOUT) == ["one"]
    wait_for(lambda: not actor.mailbox.scheduled)
    assert actor.mailbox.hibernating and ref.stats()["mailbox"] == 0
    ref.tell("two")
    assert ref.ask("seen", timeout=TIMEOUT) == ["one", "two"]


def test_a_byte_budget_refuses_what_would_overflow_it():
    class Outbox(Recorder):
        def weigh(self, message):
            return len(message) if isinstance(message, bytes) else 0

    actor = Outbox()
    actor.mailbox.max_bytes = 100
    ref = actor.start()
    gate = gevent.event.Event()
    ref.tell(("wait", gate))
    wait_for(lambda: actor._worker is not None)
    ref.tell(b"x" * 60)
    ref.tell(b"y" * 40)
    with pytest.raises(MailboxFull):
        ref.tell(b"z")
    gate.set()
    assert ref.ask("seen", timeout=TIMEOUT) == [b"x" * 60, b"y" * 40]
    ref.tell(b"w" * 500)  # alone in an empty mailbox, even an oversized one goes in
    assert ref.ask("seen", timeout=TIMEOUT)[-1] == b"w" * 500
    assert actor.mailbox.weight == 0


def test_tell_with_wait_blocks_until_there_is_room_and_loses_nothing():
    ref = Recorder(mailbox_limit=5).start()
    gate = gevent.event.Event()
    ref.tell(("wait", gate))
    gevent.sleep(0)
    for i in range(5):
        ref.tell(i)
    with pytest.raises(MailboxFull):
        ref.tell("refused at once")
    with pytest.raises(MailboxFull):
        ref.tell("refused after the wait", wait=0.05)
    gevent.spawn_later(0.05, gate.set)
    for i in range(5, 100):  # the sender is slowed to the actor's pace instead
        ref.tell(i, wait=TIMEOUT)
    wait_for(lambda: ref.mailbox_size == 0)
    assert ref.ask("seen", timeout=TIMEOUT) == list(range(100))


# -- rooms, the registry and the hub ------------------------------------------


class ListTransport:
    """A transport that records frames: the session's far end, without a socket."""

    def __init__(self, block: gevent.event.Event | None = None):
        self.frames, self.closed_with, self.block = [], None, block
        self.objects = []  # the Frame objects themselves, to check they are shared
        self.arrived = gevent.event.Event()

    def send(self, frames):
        if self.block is not None:
            self.block.wait()
        self.objects.extend(frames)
        self.frames.extend(json.loads(f.json) for f in frames)
        self.arrived.set()

    def close(self, code, reason):
        self.closed_with = (code, reason)


def chat(max_rooms=100, max_messages=10):
    hub = HubActor().start()
    return hub, RegistryActor(hub, max_rooms, max_messages).start()


def live_greenlets():
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead)


def wait_for(predicate, timeout=TIMEOUT):
    with gevent.Timeout(timeout):
        while not predicate():
            gevent.sleep(0.001)


def test_the_clock_never_repeats_or_goes_back_and_moves_past_a_later_stamp():
    clock = Clock()
    stamps = [clock.stamp() for _ in range(1000)]  # faster than the wall clock ticks
    assert stamps == sorted(stamps) and len(set(stamps)) == 1000
    later = stamps[-1] + 10**12  # another process, 1000 s ahead
    clock.seen(later)
    assert clock.stamp() == later + 1
    clock.seen(0)  # an older stamp changes nothing
    assert clock.stamp() == later + 2


def test_room_keeps_first_spelling_history_and_fans_out():
    hub, registry = chat(max_messages=2)
    transport = ListTransport()
    session = SessionActor("s", transport, "u", max_outbox=100).start()
    hub.tell(Join(session))
    for room, text in [("Main", "1"), ("MAIN", "2"), ("main", "3")]:
        registry.tell(Post(Draft(room, text, id=text), "ann"))
    wait_for(lambda: len(transport.frames) == 3)
    assert {f["room"] for f in transport.frames} == {"Main"}
    room = registry.ask(FindRoom("mAiN"), timeout=TIMEOUT)
    history = json.loads(room.actor.ask(GetHistory(), timeout=TIMEOUT))["result"]
    assert [m["text"] for m in history] == ["2", "3"]  # the last max_messages
    assert json.loads(room.json)["last_message"]["text"] == "3"
    assert "id" not in json.loads(room.json)["last_message"]


def test_registry_forgets_the_least_recently_active_room():
    hub, registry = chat(max_rooms=2)
    for room in ["a", "b", "a", "c"]:
        registry.tell(Post(Draft(room, "x"), "u"))
    rooms = [json.loads(room) for room in registry.ask(ListRooms(), timeout=TIMEOUT)]
    assert [r["name"] for r in rooms] == ["c", "a"]
    assert registry.ask(FindRoom("b"), timeout=TIMEOUT) is None


class SlowRoom(RoomActor):
    __slots__ = ()

    def receive(self, message):
        gevent.sleep(0.5)
        return super().receive(message)


def test_a_killed_room_keeps_its_history_and_keeps_serving():
    hub, registry = chat()
    registry.tell(Post(Draft("r", "before"), "u"))
    room = registry.ask(FindRoom("r"), timeout=TIMEOUT)
    actor = room.actor._actor
    actor.__class__ = SlowRoom  # its next message blocks, so it can be killed in the middle
    registry.tell(Post(Draft("r", "lost in the crash"), "u"))
    wait_for(lambda: actor._worker is not None)
    gevent.kill(actor._worker)  # crash the room's greenlet in the middle of the message
    actor.__class__ = RoomActor
    registry.tell(Post(Draft("r", "after"), "u"))
    wait_for(lambda: room.actor.ask(Describe(), timeout=TIMEOUT)["history"] == 2)
    history = json.loads(room.actor.ask(GetHistory(), timeout=TIMEOUT))["result"]
    assert [m["text"] for m in history] == ["before", "after"]
    assert room.actor.stats()["restarts"] == 1


def test_hub_cuts_off_a_session_whose_outbox_is_full_and_others_go_on():
    hub, registry = chat()
    stuck = ListTransport(block=gevent.event.Event())  # never finishes a write
    fast = ListTransport()
    ended = gevent.event.AsyncResult()
    slow_session = SessionActor("slow", stuck, "slow", max_outbox=5, ended=ended).start()
    fast_session = SessionActor("fast", fast, "fast", max_outbox=1000).start()
    hub.tell(Join(slow_session))
    hub.tell(Join(fast_session))
    for i in range(20):
        registry.tell(Post(Draft("r", str(i)), "u"))
    wait_for(lambda: len(fast.frames) == 20)
    wait_for(lambda: stuck.closed_with is not None)
    assert stuck.closed_with == (SLOW_CONSUMER.code, SLOW_CONSUMER.reason)
    assert not slow_session.alive
    assert hub.ask(Describe(), timeout=TIMEOUT)["sessions"] == 1
    # The session reports how it ended to whoever started it (actors/chat/connection.py).
    assert ended.get(timeout=TIMEOUT) == SessionEnded(SLOW_CONSUMER, 0)


def test_session_batches_frames_that_queue_up():
    gate = gevent.event.Event()
    transport = ListTransport(block=gate)
    calls = []
    original = transport.send
    transport.send = lambda frames: (calls.append(len(frames)), original(frames))
    session = SessionActor("s", transport, "u", max_outbox=100).start()
    for i in range(10):
        session.tell(Frame(json.dumps({"n": i}).encode()))
    gevent.sleep(0)
    gate.set()
    wait_for(lambda: len(transport.frames) == 10)
    assert [f["n"] for f in transport.frames] == list(range(10))
    assert len(calls) < 10  # several frames per write


def test_a_message_is_encoded_once_for_all_receivers_and_the_history():
    hub, registry = chat()
    transports = [ListTransport() for _ in range(3)]
    for n, transport in enumerate(transports):
        hub.tell(Join(SessionActor(f"s{n}", transport, "u", max_outbox=10).start()))
    registry.tell(Post(Draft("r", "once", id="i"), "u"))
    wait_for(lambda: all(t.objects for t in transports))
    (first,) = transports[0].objects
    assert all(t.objects[0] is first for t in transports)  # one object, not one per receiver
    room = registry.ask(FindRoom("r"), timeout=TIMEOUT)
    history = room.actor.ask(GetHistory(), timeout=TIMEOUT)
    assert first.json in history  # the history reuses the same bytes
