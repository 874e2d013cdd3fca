"""docs/protocol.md Part 3, item by item, against a real embedded server process.

Each test names the item it guards; each would fail on a server that broke it.
"""

from __future__ import annotations

import json
import re
import urllib.parse

import pytest
import websocket

from tests.conftest import receive, send

CREATED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


def post(server, room, text, username="poster", **extra):
    """Post through a websocket and wait for the echo, so the message is stored."""
    ws = server.connect(urllib.parse.quote(username))
    send(ws, room=room, text=text, **extra)
    echo = receive(ws)
    ws.close()
    return echo


def test_1_rooms_is_empty_list_and_history_is_list(server):
    assert server.get("/api/rooms") == {"result": []}
    post(server, "general", "hello")
    assert isinstance(server.get("/api/rooms/general/history")["result"], list)


def test_2_listed_room_has_full_last_message(server):
    post(server, "general", "hello", username="ann")
    (room,) = server.get("/api/rooms")["result"]
    assert room["name"] == "general"
    last = room["last_message"]
    assert last["room"] == "general" and last["text"] == "hello"
    assert last["sender"] == {"username": "ann"} and CREATED.match(last["created"])


def test_3_unknown_room_404_and_lookup_ignores_case(server):
    status, _, body = server.request("/api/rooms/nowhere")
    assert status == 404 and json.loads(body) == {"error": "room nowhere not found"}
    status, _, body = server.request("/api/rooms/nowhere/history")
    assert status == 404 and json.loads(body) == {"error": "room nowhere not found"}
    post(server, "General", "hi")
    assert server.get("/api/rooms/gEnErAl")["result"]["name"] == "General"
    assert server.get("/api/rooms/GENERAL/history")["result"][0]["text"] == "hi"


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
def test_4_read_endpoints_accept_get_post_head(server, method):
    post(server, "r", "x")
    for path in ("/api/rooms", "/api/rooms/r", "/api/rooms/r/history", "/api/settings"):
        status, headers, body = server.request(path, method=method)
        assert status == 200, path
        if method != "HEAD":
            assert "result" in json.loads(body)


def test_5_cors_and_preflight(server):
    _, headers, _ = server.request("/api/rooms", headers={"Origin": "https://elsewhere.example"})
    assert headers["Access-Control-Allow-Origin"] == "*"
    status, headers, _ = server.request(
        "/api/rooms/x/history", method="OPTIONS",
        headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"})
    assert status in (200, 204)
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert "content-type" in headers["Access-Control-Allow-Headers"].lower()
    ws = server.connect("o", header=["Origin: https://evil.example"])
    send(ws, room="r", text="t")
    assert receive(ws)["text"] == "t"


def test_6_json_content_type_with_charset(server):
    for path in ("/api/rooms", "/api/settings", "/api/rooms/none", "/api/unknown"):
        _, headers, _ = server.request(path)
        assert headers["Content-Type"] == "application/json; charset=utf-8", path


@pytest.mark.parametrize("name", ["a/b/c", "with space", "100%", "a&b", "Привет", "c++", "x+y"])
def test_7_room_names_in_path(server, name):
    post(server, name, "hello")
    quoted = urllib.parse.quote(name, safe="")
    assert server.get(f"/api/rooms/{quoted}")["result"]["name"] == name
    assert server.get(f"/api/rooms/{quoted}/history")["result"][0]["room"] == name
    if "/" in name:  # an unencoded slash works too
        assert server.get(f"/api/rooms/{name}/history")["result"][0]["text"] == "hello"


def test_7_plus_in_path_is_literal(server):
    post(server, "c++", "x")
    status, _, _ = server.request("/api/rooms/c%20%20")
    assert status == 404
    assert server.get("/api/rooms/c++")["result"]["name"] == "c++"


def test_8_username_decoding_and_fallback(server):
    cases = [("username=ann+lee", "ann lee"), ("username=%D0%98%D0%B2%D0%B0%D0%BD", "Иван"),
             ("username=++pad+++", "pad"), ("username=&name=legacy", "legacy"),
             ("username=+&name=bob", "bob"), ("name=only", "only")]
    for query, expected in cases:
        ws = server.connect(None, query=query)
        send(ws, room="names", text="hi")
        assert receive(ws)["sender"]["username"] == expected, query
        ws.close()


@pytest.mark.parametrize("query", ["", "username=", "username=+++", "name=%20"])
def test_8_no_username_is_401_before_upgrade(server, query):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        server.connect(None, query=query)
    assert refused.value.status_code == 401
    assert b"name required" in refused.value.resp_body


def test_8_username_is_cut_to_limit(start_server):
    server = start_server(max_username_length=5)
    ws = server.connect("abcdefghij")
    send(ws, room="r", text="t")
    assert receive(ws)["sender"]["username"] == "abcde"


def test_9_every_message_to_every_connection(server):
    clients = [server.connect(f"u{i}") for i in range(4)]
    send(clients[0], room="alpha", text="one")
    send(clients[1], room="beta", text="two")
    orders = []
    for ws in clients:  # every room, sender included
        orders.append([(m["room"], m["text"]) for m in (receive(ws), receive(ws))])
        assert sorted(orders[-1]) == [("alpha", "one"), ("beta", "two")]
    assert all(order == orders[0] for order in orders)  # and one order for everyone


def test_10_id_echoed_to_everyone_absent_when_not_given(server):
    a, b = server.connect("a"), server.connect("b")
    send(a, room="r", text="with", id="client-1")
    for ws in (a, b):
        assert receive(ws)["id"] == "client-1"
    for frame in ({"room": "r", "text": "none"}, {"room": "r", "text": "empty", "id": ""},
                  {"room": "r", "text": "null", "id": None}):
        a.send(json.dumps(frame))
        for ws in (a, b):
            assert "id" not in receive(ws)


def test_11_id_in_history_not_in_last_message(server):
    post(server, "r", "x", id="keep-me")
    assert server.get("/api/rooms/r/history")["result"][0]["id"] == "keep-me"
    assert "id" not in server.get("/api/rooms/r")["result"]["last_message"]
    assert "id" not in server.get("/api/rooms")["result"][0]["last_message"]


def test_12_no_other_frames_unless_opted_in(server):
    plain, opted = server.connect("plain"), server.connect("opted", query="v=2")
    for bad in ["not json", "[1,2]", '"str"', json.dumps({"room": "", "text": "x"}),
                json.dumps({"room": "r", "text": "   "}), json.dumps({"room": 5, "text": "x"}),
                json.dumps({"text": "no room"})]:
        plain.send(bad)
        opted.send(bad)
        error = receive(opted)
        assert set(error) <= {"error", "id"} and error["error"], bad
    send(opted, room="r", text="bad id", id=7)
    assert "error" in receive(opted)
    send(opted, room="r", text="", id="mine")
    assert receive(opted) == {"error": "text is empty", "id": "mine"}
    send(plain, room="r", text="still connected")  # bad input cost nothing
    assert receive(plain)["text"] == "still connected"  # the next frame: nothing came before


def test_13_ping_answered_and_protocol_ping_too(server):
    ws = server.connect("p")
    send(ws, ping=True)
    assert receive(ws) == {"pong": True}
    ws.ping(b"hello")
    ws.settimeout(1.0)
    opcode, data = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_PONG and data == b"hello"


def test_15_unknown_fields_and_nulls_ignored(server):
    ws = server.connect("real")
    send(ws, room="r", text="t", sender={"username": "forged"}, created="1999", extra=None,
         id=None, color="red")
    message = receive(ws)
    assert message["sender"] == {"username": "real"}
    assert message["created"] != "1999" and "color" not in message and "extra" not in message


def test_16_created_unique_increasing_and_history_sorted(server):
    ws = server.connect("c")
    for i in range(50):
        send(ws, room=f"room{i % 3}", text=str(i))
    received = [receive(ws) for _ in range(50)]
    stamps = [m["created"] for m in received]
    assert all(CREATED.match(s) for s in stamps) and len(set(stamps)) == 50
    for room in ("room0", "room1", "room2"):  # within a room, arrival order is created order
        in_room = [m["created"] for m in received if m["room"] == room]
        assert in_room == sorted(in_room)
    history = server.get("/api/rooms/room0/history")["result"]
    assert [m["created"] for m in history] == sorted(m["created"] for m in history)
    assert [m["text"] for m in history] == [str(i) for i in range(0, 50, 3)]


def test_17_settings_are_integers_uptime_in_nanoseconds(server):
    first = server.get("/api/settings")["result"]
    for key in ("max_message_length", "max_room_title_length", "max_username_length",
                "max_messages_in_room", "max_frame_bytes", "max_outbox_messages", "max_rooms"):
        assert isinstance(first[key], int), key
    assert first["max_message_length"] == 10500 and first["max_room_title_length"] == 50
    assert first["max_username_length"] == 50
    ws = server.connect("t")  # a round trip takes real time: uptime must grow by >= 1000 ns
    send(ws, ping=True)
    receive(ws)
    second = server.get("/api/settings")["result"]
    assert isinstance(second["uptime"], int) and second["uptime"] > first["uptime"] > 0
    assert first["uptime"] < 3600 * 10**9  # nanoseconds since start, not since the epoch


def test_18_trim_cut_by_characters_drop_empty(start_server):
    server = start_server(max_message_length=5, max_room_title_length=4)
    ws = server.connect("t")
    send(ws, room="  Ёлки-палки  ", text="  Привет, мир  ")
    message = receive(ws)
    assert message["room"] == "Ёлки" and message["text"] == "Приве"
    send(ws, room="ёЛКИ", text="second")  # the echo carries the first-seen spelling
    assert receive(ws)["room"] == "Ёлки"
    send(ws, room="   ", text="dropped")
    send(ws, room="r", text="\n\t ")
    send(ws, room="r", text="end")
    assert receive(ws)["text"] == "end"  # the next frame: both drops posted nothing


def test_19_several_connections_per_username(server):
    one, two = server.connect("same"), server.connect("same")
    send(one, room="r", text="from one")
    assert receive(two)["text"] == "from one"
    send(two, room="r", text="from two")
    assert [receive(one)["text"], receive(one)["text"]] == ["from one", "from two"]


def test_20_kozma_room_exists_soon_after_start(start_server):
    server = start_server(kozma=1, kozma_first_delay=0.2, kozma_max_pause=0.2)
    ws = server.connect("watcher")
    message = receive(ws, timeout=5)
    assert message["room"] == "kozma" and message["sender"]["username"] == "Козьма Прутков"
    assert len(message["text"]) > 3
    assert server.get("/api/rooms/kozma")["result"]["name"] == "kozma"


def test_20_kozma_flag_single_dash(start_server, tmp_path):
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT
    from tests.ports import free_port
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "app", "--addr", f"127.0.0.1:{port}",
                                "-kozma", "--kozma-first-delay", "0.1"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ws = None
        deadline = time.monotonic() + 15
        while ws is None and time.monotonic() < deadline:
            try:
                ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws?username=w",
                                                 timeout=5)
            except OSError:
                time.sleep(0.05)
        assert ws is not None
        assert receive(ws)["room"] == "kozma"
    finally:
        process.kill()
        process.wait(5)


def test_unknown_api_path_and_wrong_method_answer_json(server):
    status, headers, body = server.request("/api/nothing/here")
    assert status == 404 and "error" in json.loads(body) and "result" not in json.loads(body)
    status, headers, body = server.request("/api/rooms", method="DELETE")
    assert status == 405 and "error" in json.loads(body)
    assert headers["Content-Type"] == "application/json; charset=utf-8"


def test_room_list_most_recently_active_first(server):
    for room in ("one", "two", "three", "two"):
        post(server, room, "x")
    assert [r["name"] for r in server.get("/api/rooms")["result"]] == ["two", "three", "one"]


def test_history_keeps_last_n(start_server):
    server = start_server(max_messages_in_room=3)
    ws = server.connect("h")
    for i in range(5):
        send(ws, room="r", text=str(i))
        receive(ws)
    assert [m["text"] for m in server.get("/api/rooms/r/history")["result"]] == ["2", "3", "4"]


def test_index_page_served(server):
    status, headers, body = server.request("/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"<html" in body.lower()


def test_nameless_is_401_under_geventwebsocket_worker_too(start_server):
    server = start_server("gunicorn-geventwebsocket")  # gunicorn.conf.py swaps in our handler
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        server.connect(None)
    assert refused.value.status_code == 401
