"""Positions and `since` with the actors alone (no network): the seam, and every `gone` reason."""

from __future__ import annotations

import json
import random

import gevent
import pytest

from actors.chat import resume
from actors.chat.hub import HubActor, Leave
from actors.chat.message import Draft, Message
from actors.chat.registry import Post, RegistryActor
from actors.chat.room import GetHistory
from actors.chat.session import SessionActor
from tests.test_actors import TIMEOUT, ListTransport, wait_for

ROOMS = ["alpha", "Beta", "gamma", "delta", "epsilon"]


def chat(max_rooms=100, max_messages=1000):
    hub = HubActor().start()
    return hub, RegistryActor(hub, max_rooms, max_messages).start()


def resumed(registry, since: str, max_replay: int = 10_000):
    """A `?v=2` session that asked to resume from `since`: (its reference, what it wrote)."""
    transport = ListTransport()
    session = SessionActor("session:v2", transport, "reader", max_outbox=max_replay + 100,
                           positions=True).start()
    registry.tell(resume.Resume(session, since, max_replay))
    return session, transport


def offset(frame: dict) -> int:
    return int(frame["pos"].rsplit(":", 1)[1])


def seam_of(transport) -> dict:
    wait_for(lambda: any("replayed" in f or "gone" in f for f in transport.frames))
    return next(f for f in transport.frames if "replayed" in f or "gone" in f)


def messages(frames) -> list[dict]:
    return [f for f in frames if "text" in f]


def test_a_v2_frame_is_the_legacy_bytes_plus_pos_built_once():
    message = Message("r", "2020-01-01T00:00:00.000000000Z", "ann", "hi", "c1", 7, "mrun:7")
    assert message.v2.json == message.json[:-1] + b',"pos":"mrun:7"}'
    assert message.v2 is message.v2  # once per message, not per receiver
    assert json.loads(message.json) == {k: v for k, v in json.loads(message.v2.json).items()
                                        if k != "pos"}


@pytest.mark.parametrize("repeat", range(200))
def test_the_seam_has_no_gap_and_no_duplicate_at_a_random_cut(repeat):
    """A poster writes into several rooms while a client is cut off and resumes with `since`."""
    rng = random.Random(repeat)
    hub, registry = chat()
    total = 60
    first, first_wire = resumed(registry, "")
    start = seam_of(first_wire)
    assert start["replayed"] == 0

    def poster():
        for i in range(total):
            registry.tell(Post(Draft(rng.choice(ROOMS), f"m{i}"), "poster"))
            if rng.random() < 0.5:
                gevent.sleep(0)

    writer = gevent.spawn(poster)
    cut = rng.randrange(0, total)
    wait_for(lambda: len(messages(first_wire.frames)) >= cut)
    seen_before = messages(list(first_wire.frames))  # what reached the client before the cut
    hub.tell(Leave(first))
    first.kill("cut")
    since = seen_before[-1]["pos"] if seen_before else start["pos"]
    second, second_wire = resumed(registry, since)
    writer.join(TIMEOUT)
    wait_for(lambda: len(messages(second_wire.frames)) >= total - len(seen_before))
    seam = seam_of(second_wire)
    assert "gone" not in seam
    seen = seen_before + messages(second_wire.frames)
    assert [f["text"] for f in seen] == [f"m{i}" for i in range(total)]  # the one order, once
    assert [offset(f) for f in seen] == list(range(1, total + 1))
    for room in ROOMS:  # and each room's part of it is that room's /history
        history = [m["text"] for m in histories(registry).get(room, [])]
        assert [f["text"] for f in seen if f["room"] == room] == history
    second.stop()


def histories(registry) -> dict[str, list]:
    from actors.chat.registry import ListRoomActors
    found = {}
    for room in registry.ask(ListRoomActors(), timeout=TIMEOUT):
        body = json.loads(room.ask(GetHistory(), timeout=TIMEOUT))["result"]
        if body:
            found[body[0]["room"]] = body
    return found


def post_and_wait(hub, registry, texts: list[tuple[str, str]]) -> list[dict]:
    """Post (room, text) pairs; the frames a `?v=2` watcher got for them."""
    watcher, wire = resumed(registry, "")
    seam_of(wire)
    for room, text in texts:
        registry.tell(Post(Draft(room, text), "poster"))
    wait_for(lambda: len(messages(wire.frames)) >= len(texts))
    watcher.stop()
    return messages(wire.frames)


def test_a_position_past_what_the_room_keeps_is_gone():
    hub, registry = chat(max_messages=3)
    frames = post_and_wait(hub, registry, [("r", f"m{i}") for i in range(6)])
    _, wire = resumed(registry, frames[1]["pos"])  # m2 was trimmed away
    assert seam_of(wire) == {"gone": resume.TOO_OLD, "pos": frames[-1]["pos"]}
    assert messages(wire.frames) == []
    _, wire = resumed(registry, frames[2]["pos"])  # m3..m5 are all kept
    assert seam_of(wire) == {"pos": frames[-1]["pos"], "replayed": 3}
    assert [f["text"] for f in messages(wire.frames)] == ["m3", "m4", "m5"]


def test_a_position_before_a_forgotten_room_is_gone():
    hub, registry = chat(max_rooms=2)
    frames = post_and_wait(hub, registry, [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4")])
    _, wire = resumed(registry, frames[0]["pos"])  # "b" (with message 2) was forgotten
    assert seam_of(wire)["gone"] == resume.TOO_OLD
    _, wire = resumed(registry, frames[1]["pos"])
    assert seam_of(wire)["replayed"] == 2
    assert [f["text"] for f in messages(wire.frames)] == ["3", "4"]


def test_another_run_or_not_a_position_is_said_so():
    hub, registry = chat()
    frames = post_and_wait(hub, registry, [("r", "one")])
    other_hub, other_registry = chat()  # another server run
    _, wire = resumed(other_registry, frames[0]["pos"])
    assert seam_of(wire)["gone"] == resume.OTHER_RUN
    for junk in ("nonsense", ":", "m1:x", frames[0]["pos"][:-1] + "99"):
        _, wire = resumed(registry, junk)
        assert seam_of(wire)["gone"] == resume.NOT_A_POSITION, junk


def test_a_replay_larger_than_the_outbox_allows_is_gone_not_a_disconnect_loop():
    hub, registry = chat()
    frames = post_and_wait(hub, registry, [("r", str(i)) for i in range(20)])
    session, wire = resumed(registry, frames[0]["pos"], max_replay=5)
    assert seam_of(wire)["gone"] == resume.TOO_MANY
    registry.tell(Post(Draft("r", "live"), "poster"))  # and it is live all the same
    wait_for(lambda: messages(wire.frames))
    assert messages(wire.frames)[0]["text"] == "live"
