"""Fair shares of the history and the rooms (actors/chat/budget.py), with the actors alone."""

from __future__ import annotations

import json

from actors.chat.budget import Held, Shares, Tally
from actors.chat.hub import HubActor
from actors.chat.message import Draft
from actors.chat.registry import FindRoom, ListRooms, Post, RegistryActor
from actors.chat.room import GetHistory
from actors.runtime.actor import Describe, Probe
from tests.test_actors import TIMEOUT


def test_a_tally_knows_its_biggest_as_amounts_go_up_and_down():
    tally: Tally[str] = Tally()
    tally.add("a", 5)
    tally.add("b", 7)
    assert tally.biggest() == "b" and tally.total == 12
    tally.add("b", -4)
    assert tally.biggest() == "a" and tally["b"] == 3
    tally.add("a", -5)
    assert tally.biggest() == "b" and tally["a"] == 0
    tally.add("b", -3)
    assert tally.biggest() is None and tally.total == 0
    for i in range(10_000):  # stale heap entries are dropped, not kept forever
        tally.add("c", 1 if i % 2 == 0 else -1)
    assert len(tally._heap) < 200


def test_an_address_past_its_share_lets_its_own_oldest_go_never_the_newest():
    shares = Shares(max_bytes=1000, max_bytes_per_address=300, max_rooms=10,
                    max_rooms_per_address=10)
    mine = [Held(f"m{i}", "room", "1.1.1.1", 100) for i in range(4)]
    other = Held("o", "room", "2.2.2.2", 100)
    assert shares.hold(other) == []
    assert [shares.hold(h) for h in mine[:3]] == [[], [], []]
    assert shares.hold(mine[3]) == [mine[0]]
    assert shares.bytes["1.1.1.1"] == 300 and shares.bytes["2.2.2.2"] == 100
    huge = Held("huge", "room", "1.1.1.1", 5000)  # bigger than the whole budget: kept alone
    assert shares.hold(huge) == mine[1:]
    assert shares.bytes["1.1.1.1"] == 5000 and not other.gone


def test_a_full_budget_takes_from_whoever_holds_most():
    shares = Shares(max_bytes=1000, max_bytes_per_address=1000, max_rooms=10,
                    max_rooms_per_address=10)
    small = [Held(f"s{i}", "room", "small", 100) for i in range(3)]
    big = [Held(f"b{i}", "room", "big", 100) for i in range(7)]
    for held in small + big:
        assert shares.hold(held) == []
    newest = Held("s3", "room", "small", 100)
    assert shares.hold(newest) == [big[0]]  # the small one posted, the big one gave way
    assert not any(h.gone for h in small)


def test_rooms_past_a_share_go_from_their_creator_then_from_who_made_most():
    shares = Shares(max_bytes=1 << 30, max_bytes_per_address=1 << 30, max_rooms=5,
                    max_rooms_per_address=3)
    for room in ("a1", "a2", "a3"):
        assert shares.room_to_forget("a") is None
        shares.created("a", room)
    shares.touched("a", "a1")
    assert shares.room_to_forget("a") == "a2"  # a's idlest
    shares.created("b", "b1")
    shares.created("c", "c1")
    assert shares.room_to_forget("b") == "a2"  # full: from the address that made most
    shares.forgotten("a", "a2")
    assert shares.rooms["a"] == 2 and shares.rooms.total == 4


def chat(**budgets):
    hub = HubActor().start()
    registry = RegistryActor(hub, budgets.pop("max_rooms", 100), 1000, **budgets).start()
    return hub, registry


def history(registry, room: str) -> list[str]:
    found = registry.ask(FindRoom(room), timeout=TIMEOUT)
    return [m["text"] for m in json.loads(found.actor.ask(GetHistory(), timeout=TIMEOUT))["result"]]


def test_one_address_cannot_empty_another_users_room_through_the_byte_budget():
    _, registry = chat(max_history_bytes=60_000, max_history_bytes_per_address=20_000)
    for i in range(20):
        registry.tell(Post(Draft("legit", f"hello {i}"), "ann", None, "10.0.0.1"))
    for i in range(200):  # ten times the whole budget, in big messages, into every room
        room = "legit" if i % 2 else f"spam{i}"
        registry.tell(Post(Draft(room, "\x01" * 1000), "mallory", None, "10.6.6.6"))
    registry.ask(Probe(), timeout=TIMEOUT)
    assert [t for t in history(registry, "legit") if t.startswith("hello")] == [
        f"hello {i}" for i in range(20)]
    state = registry.ask(Describe(), timeout=TIMEOUT)
    assert state["history_bytes"] <= 60_000 and state["forgotten_messages"] > 0


def test_a_room_whose_last_messages_go_shows_its_newest_kept_and_an_emptied_room_goes():
    _, registry = chat(max_history_bytes=10_000, max_history_bytes_per_address=3_000)
    registry.tell(Post(Draft("mixed", "ann's"), "ann", None, "10.0.0.1"))
    registry.tell(Post(Draft("mixed", "x" * 1000), "mallory", None, "10.6.6.6"))
    registry.tell(Post(Draft("only-mallory", "y" * 1000), "mallory", None, "10.6.6.6"))
    for _ in range(3):
        registry.tell(Post(Draft("elsewhere", "z" * 1000), "mallory", None, "10.6.6.6"))
    rooms = [json.loads(room) for room in registry.ask(ListRooms(), timeout=TIMEOUT)]
    assert [r["name"] for r in rooms] == ["elsewhere", "mixed"]  # only-mallory emptied: gone
    mixed = next(r for r in rooms if r["name"] == "mixed")
    assert mixed["last_message"]["text"] == "ann's"
    assert history(registry, "mixed") == ["ann's"]


def test_one_address_cannot_push_out_another_users_room_through_max_rooms():
    _, registry = chat(max_rooms=30, max_rooms_per_address=10)
    registry.tell(Post(Draft("home", "kept"), "ann", None, "10.0.0.1"))
    for i in range(500):
        registry.tell(Post(Draft(f"spam{i}", "x"), "mallory", None, "10.6.6.6"))
    names = [json.loads(room)["name"] for room in registry.ask(ListRooms(), timeout=TIMEOUT)]
    assert "home" in names and len(names) == 11
    assert history(registry, "home") == ["kept"]
