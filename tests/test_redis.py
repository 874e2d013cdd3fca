"""Several real nane processes on one real `redis-server` behave as ONE server (issue 3).

Every test starts its own redis-server on a free loopback port
(tests/redis_server.py) and real server processes pointed at it with
NANE_REDIS_URL, as a deploy would.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import zlib

import psutil
import pytest
import websocket

from tests.conftest import receive, send
from tests.crowd import Crowd

CREATED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
RECOVERY_TIMEOUT = 15.0


@pytest.fixture
def shared(start_server, redis_server):  # noqa: F811
    """Factory: a nane process on this test's Redis (`shared(mode="embedded", **settings)`)."""
    def start(mode: str = "embedded", env: dict | None = None, **settings):
        return start_server(mode, env=env, redis_url=redis_server.url, **settings)
    return start


def post(server, room, text, username="poster", **extra) -> dict:
    """Post through one process and wait for the echo, so the message is stored."""
    ws = server.connect(urllib.parse.quote(username))
    send(ws, room=room, text=text, **extra)
    echo = receive(ws)
    ws.close()
    return echo


def raw(server, path) -> bytes:
    status, _, body = server.request(path)
    assert status == 200, (path, status, body)
    return body


def wait_until_serving(server, timeout: float = RECOVERY_TIMEOUT) -> None:
    """Poll until the process answers /api/rooms with 200 again.

    Its link to Redis is internal state with no event a test can wait on; the
    poll is bounded and each request is a real client's request.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = server.request("/api/rooms", timeout=2)
        if status == 200:
            return
        assert status == 503, (status, body)
        time.sleep(0.05)
    raise AssertionError(f"{server.base} did not reconnect to Redis in {timeout}s:\n{server.log()}")


# -- two and three processes ---------------------------------------------------


def test_message_through_either_process_reaches_every_connection_once(shared):
    a, b = shared(), shared()
    clients = [a.connect(f"a{i}") for i in range(3)] + [b.connect(f"b{i}") for i in range(3)]
    send(clients[0], room="Lobby", text="from a", id="1")
    for ws in clients:
        assert receive(ws)["text"] == "from a"
    send(clients[3], room="lobby", text="from b")
    for ws in clients:
        message = receive(ws)
        assert (message["room"], message["text"], "id" in message) == ("Lobby", "from b", False)
    send(clients[0], room="Lobby", text="sentinel")
    for ws in clients:  # exactly once: the next frame is the sentinel, not a second copy
        assert receive(ws)["text"] == "sentinel"
    for path in ("/api/rooms", "/api/rooms/LOBBY", "/api/rooms/lobby/history"):
        assert raw(a, path) == raw(b, path), path
    assert json.loads(raw(b, "/api/rooms/lobby"))["result"]["name"] == "Lobby"  # first spelling


def test_late_joining_process_sees_earlier_rooms_and_history(shared):
    a = shared()
    post(a, "One", "first", id="x1")
    post(a, "two", "second")
    post(a, "ONE", "third")
    late = shared()
    for path in ("/api/rooms", "/api/rooms/one", "/api/rooms/one/history",
                 "/api/rooms/Two/history"):
        assert raw(late, path) == raw(a, path), path
    rooms = json.loads(raw(late, "/api/rooms"))["result"]
    assert [r["name"] for r in rooms] == ["One", "two"]
    history = json.loads(raw(late, "/api/rooms/one/history"))["result"]
    assert [(m["room"], m["text"], m.get("id")) for m in history] == [
        ("One", "first", "x1"), ("One", "third", None)]
    listener = late.connect("late")
    post(a, "two", "after")
    assert receive(listener)["text"] == "after"


def test_per_room_order_identical_on_every_process_and_in_history(shared):
    servers = [shared(), shared(), shared()]
    watchers = [s.connect(f"watch{i}") for i, s in enumerate(servers)]
    posters = [s.connect(f"poster{i}") for i, s in enumerate(servers)]
    per_poster = 30
    for n in range(per_poster):  # all three write to one room at once, through three processes
        for i, ws in enumerate(posters):
            send(ws, room="race", text=f"{i}:{n}")
    total = per_poster * len(posters)
    seen = [[receive(ws) for _ in range(total)] for ws in watchers]
    orders = [[m["text"] for m in messages] for messages in seen]
    assert orders[0] == orders[1] == orders[2]
    assert sorted(orders[0]) == sorted(f"{i}:{n}" for i in range(3) for n in range(per_poster))
    for i in range(3):  # each poster's own messages keep the order it sent them in
        mine = [t for t in orders[0] if t.startswith(f"{i}:")]
        assert mine == [f"{i}:{n}" for n in range(per_poster)]
    created = [m["created"] for m in seen[0]]
    assert all(CREATED.match(c) for c in created)
    assert created == sorted(created) and len(set(created)) == total  # unique, increasing
    for server in servers:
        history = json.loads(raw(server, "/api/rooms/race/history"))["result"]
        assert [m["text"] for m in history] == orders[0]
        assert [m["created"] for m in history] == created


def test_three_processes_100_clients_each_20_messages_nothing_lost_or_duplicated(shared):
    processes, per_process, per_client, rooms = 3, 100, 20, 5
    servers = [shared(max_outbox_messages=8192, max_messages_per_second_per_address=100000)
               for _ in range(processes)]  # 300 users behind one address
    total = processes * per_process * per_client
    counts: list[bytearray] = []  # receiver -> times it got each id
    last_seen: list[list[int]] = []  # receiver -> sender -> the sender's last message number
    order = {}  # (receiver, room) -> running checksum of the ids it saw, in order
    received = [0]

    def on_message(client, payload: bytes) -> None:
        assert payload.startswith(b'{"id":"'), payload
        id = int(payload[7:payload.index(b'"', 7)])
        counts[client.index][id] += 1
        sender, n = divmod(id, per_client)
        assert n > last_seen[client.index][sender], "a sender's messages out of order"
        last_seen[client.index][sender] = n
        key = (client.index, (id // per_client) % rooms)
        order[key] = zlib.crc32(id.to_bytes(4, "big"), order.get(key, 0))
        received[0] += 1

    crowd = Crowd(on_message)
    try:
        for server in servers:
            for _ in range(per_process):
                crowd.add(server.port, f"c{len(crowd.clients)}")
                counts.append(bytearray(total))
                last_seen.append([-1] * processes * per_process)
        for n in range(per_client):
            for client in crowd.clients:
                id = client.index * per_client + n
                crowd.send(client, {"room": f"room{client.index % rooms}", "text": f"m{id}",
                                    "id": str(id)})
        expected = total * len(crowd.clients)
        finished = crowd.pump_until(lambda: received[0] >= expected, timeout=120)
        assert not any(c.closed for c in crowd.clients), [c.close_code for c in crowd.clients]
        assert finished, f"received {received[0]} of {expected} frames"
        lost = sum(row.count(0) for row in counts)
        duplicated = sum(1 for row in counts for c in row if c > 1)
        assert (lost, duplicated) == (0, 0)
        for room in range(rooms):  # a room's messages in one order on every connection
            assert len({order[(c.index, room)] for c in crowd.clients}) == 1
    finally:
        crowd.close()
    for server in servers[1:]:
        assert raw(server, "/api/rooms") == raw(servers[0], "/api/rooms")


# -- gunicorn ------------------------------------------------------------------


def worker_of(server, ws) -> int:
    """The pid of the gunicorn worker that accepted this websocket."""
    local_port = ws.sock.getsockname()[1]
    for worker in psutil.Process(server.process.pid).children():
        for connection in worker.net_connections(kind="tcp"):
            if connection.raddr and connection.raddr.port == local_port:
                return worker.pid
    raise AssertionError("no worker holds this connection")


def test_gunicorn_two_workers_from_the_procfile_share_rooms(shared):
    server = shared("gunicorn-geventwebsocket", env={"WEB_CONCURRENCY": "2"})
    assert len(psutil.Process(server.process.pid).children()) == 2
    by_worker: dict[int, websocket.WebSocket] = {}
    extra = []
    for i in range(40):  # the kernel picks the worker; connect until both have a client
        ws = server.connect(f"w{i}")
        pid = worker_of(server, ws)
        if pid in by_worker:
            extra.append(ws)
        else:
            by_worker[pid] = ws
        if len(by_worker) == 2:
            break
    assert len(by_worker) == 2, "every connection landed on one worker"
    first, second = by_worker.values()
    send(first, room="g", text="one")
    send(second, room="g", text="two")
    for ws in (first, second):
        assert sorted(receive(ws)["text"] for _ in range(2)) == ["one", "two"]
    history = server.get("/api/rooms/g/history")["result"]
    assert sorted(m["text"] for m in history) == ["one", "two"]
    for ws in [first, second, *extra]:
        ws.close()


def test_gunicorn_without_redis_still_pins_one_worker(start_server):
    server = start_server("gunicorn-geventwebsocket", env={"WEB_CONCURRENCY": "3"})
    assert len(psutil.Process(server.process.pid).children()) == 1


# -- room forgetting -----------------------------------------------------------


def test_room_limit_forgets_the_idlest_room_for_every_process(shared):
    a, b = shared(max_rooms=3), shared(max_rooms=3)
    post(a, "r1", "x")
    post(b, "r2", "x")
    post(a, "r3", "x")
    post(b, "R1", "again")  # r1 is now the most recent; r2 the idlest
    post(a, "r4", "x")
    for server in (a, b):
        names = [r["name"] for r in json.loads(raw(server, "/api/rooms"))["result"]]
        assert names == ["r4", "r1", "r3"]
        for path in ("/api/rooms/r2", "/api/rooms/r2/history"):
            status, _, body = server.request(path)
            assert (status, json.loads(body)) == (404, {"error": "room r2 not found"})
    post(b, "r2", "reborn")
    history = json.loads(raw(a, "/api/rooms/r2/history"))["result"]
    assert [m["text"] for m in history] == ["reborn"]


# -- Redis goes away -----------------------------------------------------------


def outcome(ws, id: str) -> str:
    """Wait for the sender's own echo or its error frame for message `id`."""
    frame = receive(ws)
    assert frame.get("id") == id, frame
    return "error" if "error" in frame else "delivered"


def test_redis_killed_mid_traffic_and_restarted(shared, redis_server):  # noqa: F811
    a, b = shared(), shared()
    sender = a.connect("sender", query="v=2")
    watchers = [a.connect("wa"), b.connect("wb")]
    results: dict[str, str] = {}
    n = 0
    # Closed loop: each message is sent when the outcome of the previous one is known.
    # Redis is killed after 20 delivered messages; go on until 5 errors (at most 200 sent).
    while n < 200 and list(results.values()).count("error") < 5:
        id = f"m{n}"
        send(sender, room="live", text=id, id=id)
        results[id] = outcome(sender, id)
        n += 1
        if n == 20:
            redis_server.kill()
    assert list(results.values())[:20] == ["delivered"] * 20
    assert "error" in results.values()
    frame_error = None
    delivered = [i for i, r in results.items() if r == "delivered"]
    for watcher in watchers:  # every process delivered exactly what the sender saw delivered
        assert [receive(watcher)["id"] for _ in delivered] == delivered
    # ...and nothing else: a frame more would come before the pong below or before "back"

    # While Redis is down: sockets stay open, HTTP says 503, posts get error frames.
    for server in (a, b):
        for path in ("/api/rooms", "/api/rooms/live", "/api/rooms/live/history"):
            status, headers, body = server.request(path)
            assert status == 503, (path, status, body)
            assert headers["Content-Type"] == "application/json; charset=utf-8"
            assert "Redis" in json.loads(body)["error"] and "result" not in json.loads(body)
        assert server.get("/api/settings")["result"]["max_rooms"] > 0  # needs no Redis
    send(sender, room="live", text="while down", id="down")
    frame_error = receive(sender)
    assert frame_error["id"] == "down" and "not delivered" in frame_error["error"]
    for ws in [sender, *watchers]:
        send(ws, ping=True)
        assert receive(ws) == {"pong": True}
    # nothing reached the watchers meanwhile: their next frame is the one sent after Redis is back

    # Redis is back on the same port (empty: it keeps nothing on disk here).
    redis_server.start()
    for server in (a, b):
        wait_until_serving(server)
    send(sender, room="live", text="back", id="back")
    assert receive(sender)["text"] == "back"
    for watcher in watchers:
        assert receive(watcher)["text"] == "back"
    send(watchers[1], room="live", text="from b")
    for ws in [sender, *watchers]:
        assert receive(ws)["text"] == "from b"
    for server in (a, b):
        history = json.loads(raw(server, "/api/rooms/live/history"))["result"]
        assert [m["text"] for m in history] == ["back", "from b"]
        log = server.log()
        assert log.count("event=redis_down") == 1, log  # each transition logged once
        assert log.count("event=redis_up") == 2, log  # at start, and after the restart


# -- the bytes Redis keeps -----------------------------------------------------


def test_messages_stored_by_lua_are_the_bytes_the_in_memory_server_makes(shared, redis_server):  # noqa: F811
    from actors.chat.message import Message, encode_list

    server = shared()
    texts = ['quote " backslash \\ slash / tab \t end', "Привет, 世界 🎉", "<b>&amp;</b>",
             "line\u2028separator"]
    for n, text in enumerate(texts):
        post(server, "Bytes", text, username="ünï \"q\"", **({"id": f"é{n}"} if n % 2 else {}))
    body = raw(server, "/api/rooms/bytes/history")
    history = json.loads(body)["result"]
    rebuilt = [Message(m["room"], m["created"], m["sender"]["username"], m["text"], m.get("id"))
               for m in history]
    assert body == encode_list([m.json for m in rebuilt])
    assert [m.text for m in rebuilt] == texts
    room = raw(server, "/api/rooms/BYTES")
    assert room == b'{"result":{"name":"Bytes","last_message":' + rebuilt[-1].summary + b"}}"


def test_posts_go_on_after_redis_forgets_the_scripts(shared, redis_server):  # noqa: F811
    import redis

    server = shared()
    post(server, "s", "before")
    with redis.Redis.from_url(redis_server.url) as client:
        client.script_flush()
    assert post(server, "s", "after")["text"] == "after"
    assert len(server.get("/api/rooms")["result"]) == 1
