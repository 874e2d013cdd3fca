"""Rooms on Redis: Python stamps and encodes, `store_post.lua` checks, stores and budgets (issue 20).

Real server processes on one real `redis-server` (tests/redis_server.py). One
address is told apart from another by `X-Forwarded-For`, which the server
trusts from 127.0.0.1 by default (`forwarded_allow_ips`).
"""

from __future__ import annotations

import json
import threading
import time

import redis

from actors.chat.message import format_created
from tests.conftest import RECEIVE_TIMEOUT, receive, send
from tests.ops_helpers import figure
from tests.test_redis import CREATED, raw, shared  # noqa: F401  (a fixture)

BIG = "\u0001" * 10_500  # ~63 KB of JSON: each character is written \u0001
FAST = 100_000  # the rate limits are not what these tests are about


def attacker(server, name: str, address: str = "10.0.0.66", query: str = ""):
    """A connection that counts against `address`."""
    return server.connect(name, query=query, header=[f"X-Forwarded-For: {address}"])


def post_and_wait(ws, room: str, text: str, id: str) -> dict:
    """Send one message and read until its own echo (bounded by the receive timeout)."""
    send(ws, room=room, text=text, id=id)
    deadline = time.monotonic() + RECEIVE_TIMEOUT
    while time.monotonic() < deadline:
        frame = receive(ws)
        if frame.get("id") == id:
            return frame
    raise AssertionError(f"no echo of {id}")


def history(server, room: str) -> list[dict]:
    return json.loads(raw(server, f"/api/rooms/{room}/history"))["result"]


def room_names(server) -> list[str]:
    return [r["name"] for r in json.loads(raw(server, "/api/rooms"))["result"]]


# -- one place stamps and encodes -----------------------------------------------


def test_created_is_unique_and_increasing_across_three_processes_posting_at_once(shared):  # noqa: F811
    servers = [shared(max_messages_per_second=FAST, max_messages_per_second_per_address=FAST)
               for _ in range(3)]
    watcher = servers[0].connect("watcher")
    per_poster, posters = 60, []
    for i, server in enumerate(servers):
        for j in range(2):
            posters.append((f"p{i}{j}", server.connect(f"p{i}{j}")))

    def run(name, ws):
        for n in range(per_poster):  # different rooms, through different processes, at once
            send(ws, room=f"room-{name}", text=f"{name}:{n}")

    threads = [threading.Thread(target=run, args=poster) for poster in posters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(RECEIVE_TIMEOUT * 2)
    total = per_poster * len(posters)
    seen = [receive(watcher) for _ in range(total)]
    created = [m["created"] for m in seen]
    assert all(CREATED.match(c) for c in created)
    assert len(set(created)) == total  # unique across every process on this Redis
    assert created == sorted(created)  # and increasing in the one order every process delivers
    for name, _ in posters:  # each sender's messages in the order sent
        assert [m["text"] for m in seen if m["sender"]["username"] == name] == [
            f"{name}:{n}" for n in range(per_poster)]
    refused = sum(actor.get("refused", 0) for server in servers
                  for actor in json.loads(raw(server, "/api/actors"))["result"]["actors"]
                  if actor["kind"] == "registry")  # batches Redis sent back to be stamped again
    figure("redis_created_three_processes", messages=total, unique=len(set(created)),
           batches_sent_back=refused)


def test_a_process_whose_clock_is_behind_stamps_past_the_data_sets_last(shared, redis_server):  # noqa: F811
    server = shared()
    ws = server.connect("me")
    post_and_wait(ws, "r", "now", "1")
    ahead = time.time_ns() + 1000 * 10**9  # as if a process 1000 s ahead had stored one
    redis.Redis.from_url(redis_server.url).set("nane:last", f"{ahead:020d}")
    assert post_and_wait(ws, "r", "after", "2")["created"] == format_created(ahead + 1)
    assert post_and_wait(ws, "r", "again", "3")["created"] == format_created(ahead + 2)
    assert [m["text"] for m in history(server, "r")] == ["now", "after", "again"]


def test_a_room_keeps_its_first_spelling_whichever_process_knew_it(shared):  # noqa: F811
    a, b = shared(max_rooms=1), shared(max_rooms=1)
    on_a, on_b = a.connect("on_a"), b.connect("on_b")
    assert post_and_wait(on_a, "Lobby", "first", "1")["room"] == "Lobby"
    assert post_and_wait(on_b, "LOBBY", "b never saw it", "2")["room"] == "Lobby"  # re-encoded
    assert post_and_wait(on_a, "other", "forgets Lobby", "3")["room"] == "other"  # max_rooms=1
    # b remembers "Lobby", but the room is gone: the new room takes b's own spelling
    assert post_and_wait(on_b, "lobBY", "reborn", "4")["room"] == "lobBY"
    assert room_names(a) == ["lobBY"]
    assert [(m["room"], m["text"]) for m in history(a, "LOBBY")] == [("lobBY", "reborn")]


# -- a batch is posts only ---------------------------------------------------------


def test_posts_mixed_with_resumes_in_the_registrys_mailbox_are_all_delivered(shared):  # noqa: F811
    server = shared(max_messages_per_second=FAST, max_messages_per_second_per_address=FAST,
                    max_resumes_per_second_per_address=FAST)
    posters = [server.connect(f"p{i}", query="v=2") for i in range(4)]
    reader = server.connect("reader", query="v=2&since=")
    since = receive(reader)["pos"]
    per_poster, resumes = 100, 0
    for n in range(per_poster):
        for i, ws in enumerate(posters):
            send(ws, room=f"r{i}", text=f"{i}:{n}", id=f"{i}:{n}")
        if n % 5 == 0:  # a resume lands between the posts in the registry's mailbox
            server.connect("resumer", query="v=2&since=" + since).close()
            resumes += 1
    for i, ws in enumerate(posters):
        got = []
        deadline = time.monotonic() + 30
        while len(got) < per_poster and time.monotonic() < deadline:
            frame = receive(ws)
            assert "error" not in frame, frame
            if frame.get("id", "").startswith(f"{i}:"):
                got.append(frame["id"])
        assert got == [f"{i}:{n}" for n in range(per_poster)]  # none lost, in order
    assert resumes == 20
    log = server.log()
    assert "failed on" not in log and "Traceback" not in log, log


# -- an error reply is not a dead link --------------------------------------------


def test_an_error_reply_from_redis_fails_that_request_only(shared, redis_server):  # noqa: F811
    server = shared()
    poster = server.connect("poster", query="v=2")
    admin = redis.Redis.from_url(redis_server.url)
    admin.set("nane:messages:planted", "not a history")  # a key of the wrong type
    admin.set("nane:room:broken", "not a room")
    send(poster, room="planted", text="refused", id="bad")
    frame = receive(poster)
    assert frame["id"] == "bad" and "not delivered" in frame["error"], frame
    assert "WRONGTYPE" in frame["error"]
    status, _, body = server.request("/api/rooms/broken")  # Redis refuses the HMGET
    assert status == 503 and "refused" in json.loads(body)["error"], body
    admin.set("nane:holders", "not a sorted set")  # a key every message writes
    send(poster, room="fine", text="refused too", id="bad2")
    frame = receive(poster)
    assert frame["id"] == "bad2" and "WRONGTYPE" in frame["error"], frame
    admin.delete("nane:holders")
    admin.script_flush()
    assert post_and_wait(poster, "fine", "after both", "ok")["text"] == "after both"
    assert room_names(server) == ["fine"]
    log = server.log()
    assert "event=redis_down" not in log and log.count("event=redis_up") == 1, log
    assert "Traceback" not in log, log


# -- fair budgets -----------------------------------------------------------------


def test_one_address_cannot_empty_another_users_room_through_the_byte_budget(
        shared, redis_server):  # noqa: F811
    budget, share = 2 * 1024 * 1024, 512 * 1024
    a, b = (shared(max_history_bytes=budget, max_history_bytes_per_address=share,
                   max_messages_per_second=FAST, max_messages_per_second_per_address=FAST)
            for _ in range(2))
    legit = a.connect("legit")
    for n in range(50):
        post_and_wait(legit, "legit", f"hello {n}", f"l{n}")
    before = history(a, "legit")
    # five connections from one address (its own share), five from five more (the whole budget)
    attackers = [attacker(b, f"big{i}", f"10.0.0.{60 + max(0, i - 4)}") for i in range(10)]
    admin = redis.Redis.from_url(redis_server.url)
    memory_before = admin.info("memory")["used_memory"]
    memory_peak = 0
    rounds = 15
    for n in range(rounds):  # 150 messages of 63 KB from six addresses: 9 MiB, 4.5 x the budget
        for i, ws in enumerate(attackers):
            send(ws, room=f"flood{(n * 10 + i) % 40}", text=BIG, id=f"b{n}-{i}")
        for i, ws in enumerate(attackers):
            while receive(ws, timeout=30).get("id") != f"b{n}-{i}":
                pass
        memory_peak = max(memory_peak, admin.info("memory")["used_memory"])
    assert history(b, "legit") == before  # not one of its 50 messages forgotten
    held = admin.zrange("nane:holders", 0, -1, withscores=True)
    by_address = {address.decode(): int(size) for address, size in held}
    assert all(size <= share for size in by_address.values()), by_address
    assert int(admin.get("nane:total")) <= budget
    kept = sum(len(json.dumps(m, ensure_ascii=False, separators=(",", ":")).encode())
               for room in room_names(a) for m in history(a, room))
    assert kept == int(admin.get("nane:total"))  # the counters match what the histories hold
    growth = memory_peak - memory_before
    figure("redis_byte_budget", posted_mb=round(rounds * 10 * 63_000 / 2**20, 1),
           used_memory_growth_mb=round(growth / 2**20, 1))
    # the histories, each room's last message and the stream: each within the budget
    assert growth < 4 * budget, growth


def test_one_address_cannot_push_another_users_room_out_through_the_room_budget(shared):  # noqa: F811
    server = shared(max_rooms=10, max_rooms_per_address=6, max_messages_per_second=FAST,
                    max_messages_per_second_per_address=FAST)
    legit = server.connect("legit")
    post_and_wait(legit, "mine", "my room", "m0")
    flood = [attacker(server, f"r{i}", "10.0.0.7") for i in range(5)]
    other = attacker(server, "other", "10.0.0.8")
    for n in range(40):  # 40 new rooms from one address, and 8 from another
        post_and_wait(flood[n % 5], f"spam{n}", "x", f"s{n}")
        if n % 5 == 0:
            post_and_wait(other, f"else{n}", "y", f"e{n}")
    names = room_names(server)
    assert "mine" in names and len(names) <= 10, names
    assert sum(name.startswith("spam") for name in names) <= 6  # its own share
    assert [m["text"] for m in history(server, "mine")] == ["my room"]


def test_count_trimming_and_forgetting_keep_rooms_and_counters_true(shared, redis_server):  # noqa: F811
    server = shared(max_messages_in_room=3, max_history_bytes_per_address=2000,
                    max_messages_per_second=FAST)
    ws = server.connect("me")
    post_and_wait(ws, "old", "alone", "o")  # this room's only message is the oldest of all
    for n in range(5):
        post_and_wait(ws, "new", f"m{n} " + "z" * 200, f"n{n}")
    assert [m["text"][:2] for m in history(server, "new")] == ["m2", "m3", "m4"]  # count
    for n in range(5, 12):  # past the address's 2000 bytes: its oldest go, "old" first
        post_and_wait(ws, f"r{n}", f"m{n} " + "z" * 200, f"n{n}")
    names = room_names(server)
    assert "old" not in names  # its last message went: the room went with it
    status, _, _ = server.request("/api/rooms/old/history")
    assert status == 404
    admin = redis.Redis.from_url(redis_server.url)
    total = int(admin.get("nane:total"))
    assert total <= 2000 and admin.zscore("nane:holders", "127.0.0.1") == total
    assert admin.hlen("nane:owners") == sum(len(history(server, n)) for n in names)
    for name in names:  # each room shows its newest remaining message, without its id
        room = json.loads(raw(server, f"/api/rooms/{name}"))["result"]
        newest = history(server, name)[-1]
        newest.pop("id")
        assert room["last_message"] == newest


def test_a_room_whose_newest_message_is_forgotten_shows_the_one_before(shared):  # noqa: F811
    server = shared(max_history_bytes_per_address=1500, max_messages_per_second=FAST)
    me = server.connect("me")
    you = attacker(server, "you", "10.0.0.9")
    post_and_wait(you, "shared", "yours, kept", "y1")
    post_and_wait(me, "shared", "mine, oldest", "m1")  # the newest of "shared"
    for n in range(6):  # my later messages elsewhere push my oldest out
        post_and_wait(me, "elsewhere", f"{n} " + "q" * 300, f"m{n + 2}")
    room = json.loads(raw(server, "/api/rooms/shared"))["result"]
    assert room["last_message"]["text"] == "yours, kept" and "id" not in room["last_message"]
    assert [m["text"] for m in history(server, "shared")] == ["yours, kept"]


def test_budgets_go_on_over_a_data_set_whose_bookkeeping_was_lost(shared, redis_server):  # noqa: F811
    server = shared(max_messages_in_room=3, max_history_bytes_per_address=1000,
                    max_messages_per_second=FAST)
    ws = server.connect("me")
    for n in range(4):
        post_and_wait(ws, "r", f"{n} " + "w" * 150, f"a{n}")
    redis.Redis.from_url(redis_server.url).delete("nane:owners")  # as if left half-written
    for n in range(4, 12):  # both budgets must forget messages they know nothing of
        post_and_wait(ws, "r" if n % 2 else "s", f"{n} " + "w" * 150, f"a{n}")
    assert len(history(server, "r")) <= 3
    assert "event=redis_down" not in server.log()


# -- the room list is served off the sequencer's turn -----------------------------


def test_polling_the_room_list_of_many_big_rooms_does_not_hold_up_posts(shared):  # noqa: F811
    rooms = 600  # 600 x 63 KB: a 36 MiB /api/rooms body
    server = shared(max_messages_per_second=FAST, max_messages_per_second_per_address=FAST,
                    max_history_bytes=1 << 30, max_history_bytes_per_address=1 << 30)
    filler = server.connect("filler")
    for n in range(rooms):
        send(filler, room=f"big{n}", text=BIG, id=f"f{n}")
        if n % 20 == 19:
            while receive(filler, timeout=30).get("id") != f"f{n}":
                pass
    assert len(json.loads(raw(server, "/api/rooms"))["result"]) == rooms
    stop = threading.Event()
    answered = [0]

    def poll():
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            status, _, body = server.request("/api/rooms", timeout=30)
            assert status == 200 and len(body) > rooms * 60_000
            answered[0] += 1

    pollers = [threading.Thread(target=poll, daemon=True) for _ in range(4)]
    for poller in pollers:
        poller.start()
    bystander = server.connect("bystander")
    worst = 0.0
    for n in range(30):
        started = time.monotonic()
        post_and_wait(bystander, "chat", f"still here {n}", f"b{n}")
        worst = max(worst, time.monotonic() - started)
        time.sleep(0.05)  # a person typing, not a flood
    stop.set()
    for poller in pollers:
        poller.join(35)
    figure("redis_rooms_polling", rooms=rooms, lists_answered=answered[0],
           bystander_worst_ms=round(worst * 1000))
    assert answered[0] >= 4
    assert worst < 1.0, worst
