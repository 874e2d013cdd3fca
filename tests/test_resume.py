"""Positions and `since` with the actors alone (no network): the seam, and every `gone` reason."""

from __future__ import annotations

import json
import random

import gevent
import pytest

from actors.chat import resume
from actors.chat.hub import Deliver, HubActor, Leave
from actors.chat.message import Draft, Message
from actors.chat.registry import Post, RegistryActor
from actors.chat.room import GetHistory
from actors.chat.session import SessionActor
from actors.runtime.actor import Probe
from tests.test_actors import TIMEOUT, ListTransport, wait_for

ROOMS = ["alpha", "Beta", "gamma", "delta", "epsilon"]


def chat(max_rooms=100, max_messages=1000, replay_messages=4095, replay_bytes=4 << 20,
         wait_ahead=0.0):
    hub = HubActor(replay_messages=replay_messages, replay_bytes=replay_bytes,
                   wait_ahead=wait_ahead).start()
    registry = RegistryActor(hub, max_rooms, max_messages).start()
    registry.ask(Probe(), timeout=TIMEOUT)  # it has told the hub where its run starts
    return hub, registry


def resumed(hub, since: str, max_replay: int = 10_000, max_bytes: int = 1 << 30,
            refused: str | None = None):
    """A `?v=2` session that asked to resume from `since`: (its reference, what it wrote)."""
    transport = ListTransport()
    session = SessionActor("session:v2", transport, "reader", max_outbox=max_replay + 100,
                           positions=True).start()
    hub.tell(resume.Resume(session, since, max_replay, max_bytes, refused))
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
    first, first_wire = resumed(hub, "")
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
    second, second_wire = resumed(hub, since)
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
    watcher, wire = resumed(hub, "")
    seam_of(wire)
    for room, text in texts:
        registry.tell(Post(Draft(room, text), "poster"))
    wait_for(lambda: len(messages(wire.frames)) >= len(texts))
    watcher.stop()
    return messages(wire.frames)


def test_a_position_older_than_the_replay_window_is_gone():
    hub, registry = chat(replay_messages=3)
    frames = post_and_wait(hub, registry, [("r", f"m{i}") for i in range(6)])
    _, wire = resumed(hub, frames[1]["pos"])  # m2 has left the window
    assert seam_of(wire) == {"gone": resume.TOO_OLD, "pos": frames[-1]["pos"]}
    assert messages(wire.frames) == []
    _, wire = resumed(hub, frames[2]["pos"])  # m3..m5 are all kept
    assert seam_of(wire) == {"pos": frames[-1]["pos"], "replayed": 3}
    assert [f["text"] for f in messages(wire.frames)] == ["m3", "m4", "m5"]


def test_a_resume_replays_what_the_live_stream_gave_even_from_a_room_forgotten_since():
    """A client that missed messages gets what it would have got live, rooms forgotten or not."""
    hub, registry = chat(max_rooms=2)
    frames = post_and_wait(hub, registry, [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4")])
    _, wire = resumed(hub, frames[0]["pos"])  # "b" (with message 2) was forgotten since
    assert seam_of(wire) == {"pos": frames[-1]["pos"], "replayed": 3}
    assert [f["text"] for f in messages(wire.frames)] == ["2", "3", "4"]


def test_a_resume_costs_what_it_returns_not_the_number_of_rooms():
    """The registry is never asked: a resume from the newest position replays nothing at once."""
    hub, registry = chat(max_rooms=5000)
    frames = post_and_wait(hub, registry, [(f"room{i}", "x") for i in range(3000)])
    registry.ask(Probe(), timeout=TIMEOUT)
    _, wire = resumed(hub, frames[-2]["pos"])
    assert seam_of(wire) == {"pos": frames[-1]["pos"], "replayed": 1}
    assert registry.stats()["handled"] == 3000  # the posts, and nothing for the resume


def test_another_run_or_not_a_position_is_said_so():
    hub, registry = chat()
    frames = post_and_wait(hub, registry, [("r", "one")])
    other_hub, other_registry = chat()  # another server run
    _, wire = resumed(other_hub, frames[0]["pos"])
    assert seam_of(wire)["gone"] == resume.OTHER_RUN
    run = frames[0]["pos"].split(":")[0]
    junk = ["nonsense", ":", "m1:x", frames[0]["pos"][:-1] + "99", f"{run}:\u0661",
            f"{run}:\u00b2", f"{run}:1-\u0661", f"{run}:1-", f"{run}:-1", f" {run}:1",
            f"{run}:1\n", f"{run}:" + "9" * 21, "M" + run[1:] + ":1"]
    for position in junk:
        _, wire = resumed(hub, position)
        assert seam_of(wire)["gone"] in (resume.NOT_A_POSITION, resume.OTHER_RUN), position
        assert seam_of(wire)["pos"] == frames[0]["pos"]


def test_positions_are_parsed_strictly_ascii_digits_only():
    assert resume.parse("m0a:12") == resume.Position("m0a", (12, 0))
    assert resume.parse("r0a:1700000000000-3") == resume.Position("r0a", (1700000000000, 3))
    for text in ("m0a:\u0661", "m0a:\u00b2", "m0a:\uff11", "r0a:1-\u0663", "m0a:1 ", "m0a:+1",
                 "m0a:1.0", "m0a:", ":1", "m0a:1-2-3", "x" * 41 + ":1"):
        assert resume.parse(text) is None, text


def test_a_replay_larger_than_the_outbox_allows_is_gone_not_a_disconnect_loop():
    hub, registry = chat()
    frames = post_and_wait(hub, registry, [("r", str(i)) for i in range(20)])
    session, wire = resumed(hub, frames[0]["pos"], max_replay=5)
    assert seam_of(wire)["gone"] == resume.TOO_MANY
    registry.tell(Post(Draft("r", "live"), "poster"))  # and it is live all the same
    wait_for(lambda: messages(wire.frames))
    assert messages(wire.frames)[0]["text"] == "live"


def test_a_replay_of_more_bytes_than_the_outbox_takes_is_gone_and_live():
    hub, registry = chat()
    frames = post_and_wait(hub, registry, [("r", "x" * 1000) for _ in range(10)])
    session, wire = resumed(hub, frames[0]["pos"], max_bytes=5000)
    assert seam_of(wire) == {"gone": resume.TOO_LARGE, "pos": frames[-1]["pos"]}
    registry.tell(Post(Draft("r", "live"), "poster"))
    wait_for(lambda: messages(wire.frames))
    assert [f["text"] for f in messages(wire.frames)] == ["live"]


def test_a_refused_resume_is_gone_at_once_and_live():
    hub, registry = chat()
    frames = post_and_wait(hub, registry, [("r", "one"), ("r", "two")])
    session, wire = resumed(hub, frames[0]["pos"], refused=resume.RATE_LIMITED)
    assert seam_of(wire) == {"gone": resume.RATE_LIMITED, "pos": frames[-1]["pos"]}
    registry.tell(Post(Draft("r", "live"), "poster"))
    wait_for(lambda: messages(wire.frames))
    assert [f["text"] for f in messages(wire.frames)] == ["live"]


def test_a_position_ahead_of_this_hub_waits_for_it_then_replays_from_there():
    """With Redis a client may come back with a position another process delivered first."""
    hub = HubActor(wait_ahead=5.0).start()
    hub.tell(resume.StartAt("rx", (10, 0), stream_ids=True))
    ahead = resume.position_text("rx", (12, 0), stream_ids=True)
    session, wire = resumed(hub, ahead)
    delivered = [Message("r", f"c{i}", "u", f"m{i}", None, (10 + i, 0),
                         resume.position_text("rx", (10 + i, 0), stream_ids=True))
                 for i in (1, 2, 3)]
    for message in delivered:
        hub.tell(Deliver(message))
    assert seam_of(wire) == {"pos": delivered[1].position, "replayed": 0}
    wait_for(lambda: messages(wire.frames))
    assert [f["text"] for f in messages(wire.frames)] == ["m3"]


def test_a_position_that_never_comes_is_not_a_position_after_the_wait():
    hub = HubActor(wait_ahead=0.2).start()
    hub.tell(resume.StartAt("rx", (10, 0), stream_ids=True))
    _, wire = resumed(hub, "rx:99-0")
    assert seam_of(wire) == {"gone": resume.NOT_A_POSITION, "pos": "rx:10-0"}
