"""The fault controls against real server processes, in every run mode.

Each control through its HTTP endpoint, and what a raw client sees; without
the flag or the token every endpoint answers 404/403 and changes nothing.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from app.api.contract import openapi
from app.websocket.codec import OP_CLOSE, OP_PING, OP_TEXT
from tests.conftest import receive, receive_close, send
from tests.ops_helpers import metric, raw_upgrade, read_frames_until_end, scrape, wait_for
from tests.wsframes import client_frame

ALL_MODES = ["embedded", "gunicorn-geventwebsocket", "gunicorn-gevent"]
TOKEN = "test-token-13"
ENDPOINTS = [path.removeprefix("/api/controls").strip("/")
             for path in openapi()["paths"] if path.startswith("/api/controls")]


def control(server, name: str, token: str | None = TOKEN, **body) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    status, _, raw = server.request(f"/api/controls/{name}".rstrip("/"), "POST", headers=headers,
                                    body=json.dumps(body).encode())
    return status, json.loads(raw)


def ok(server, name: str, **body) -> dict:
    status, answer = control(server, name, **body)
    assert status == 200, (name, status, answer)
    return answer["result"]


def actors(server) -> dict[str, dict]:
    return {a["name"]: a for a in server.get("/api/actors")["result"]["actors"]}


def session_of(server, username: str) -> str:
    def find():
        named = [a["name"] for a in actors(server).values()
                 if a["kind"] == "session" and a.get("username") == username]
        return named[-1] if named else None
    return wait_for(find, what=f"the session of {username}")


def history(server, room: str) -> list[str]:
    return [m["text"] for m in server.get(f"/api/rooms/{room}/history")["result"]]


def state(server) -> tuple:
    """What a control would change: rooms, histories, the actors' counters."""
    view = actors(server)
    return (server.get("/api/rooms")["result"],
            sorted((name, a["restarts"], a["paused"], a["slow_ms"], a["alive"])
                   for name, a in view.items()),
            view["hub"]["delay_ms"])


def test_endpoints_are_documented():
    assert set(ENDPOINTS) >= {"", "crash", "crash-until-give-up", "slow", "pause", "resume",
                              "disconnect", "forget", "delay"}


@pytest.mark.parametrize("mode", ALL_MODES)
def test_without_the_flag_every_control_is_404_and_changes_nothing(start_server, mode):
    server = start_server(mode, controls_token=TOKEN)  # a token alone does not switch them on
    ws = server.connect("ann")
    send(ws, room="lobby", text="hello")
    receive(ws)
    before = state(server)
    for name in ENDPOINTS:
        status, answer = control(server, name, actor="room:lobby", ms=100, how="1000")
        assert status == 404 and answer == {"error": f"no such endpoint: /api/controls/{name}"
                                            .rstrip("/")}, (name, status, answer)
    assert state(server) == before
    assert server.get("/api/actors")["result"]["controls"] is False
    send(ws, ping=True)
    assert receive(ws) == {"pong": True}  # the connection was not touched


def test_without_the_token_every_control_is_403_and_changes_nothing(start_server):
    server = start_server(controls=1, controls_token=TOKEN)
    ws = server.connect("ann")
    send(ws, room="lobby", text="hello")
    receive(ws)
    session = session_of(server, "ann")
    before = state(server)
    for name in ENDPOINTS:
        for token in (None, "wrong", TOKEN + "x", ""):
            status, answer = control(server, name, token=token, actor=session, ms=100)
            assert status == 403 and "token" in answer["error"], (name, token, status)
    assert state(server) == before
    assert history(server, "lobby") == ["hello"]
    assert metric(server, "nane_controls_total", control="crash") == 0
    send(ws, ping=True)
    assert receive(ws) == {"pong": True}


def test_the_one_time_token_is_printed_at_start_and_works(start_server):
    server = start_server(controls=1)
    found = wait_for(lambda: re.search(r"event=controls_on token=(\S+)", server.log()),
                     what="the token line")
    token = found.group(1)
    assert len(token) >= 20
    assert control(server, "", token=token)[0] == 200
    assert control(server, "", token="nope")[0] == 403
    assert server.get("/api/actors")["result"]["controls"] is True


@pytest.mark.parametrize("mode", ALL_MODES)
def test_crash_pause_slow_and_delay_in_every_mode(start_server, mode):
    server = start_server(mode, controls=1, controls_token=TOKEN, max_outbox_messages=20)
    ann, bob = server.connect("ann"), server.connect("bob")
    send(ann, room="lobby", text="one")
    assert receive(ann)["text"] == "one" and receive(bob)["text"] == "one"

    # crash: restarted, restarts counted, history kept, and it takes the next message
    room = ok(server, "crash", actor="room:lobby")["actor"]
    assert room["alive"] and room["restarts"] == 1 and room["history"] == 1
    send(ann, room="lobby", text="two")
    assert receive(ann)["text"] == "two" and receive(bob)["text"] == "two"
    assert history(server, "lobby") == ["one", "two"]
    assert actors(server)["room:lobby"]["control"]["control"] == "crash"

    # pause: the room's mailbox grows, delivery goes on (the hub is not paused)
    ok(server, "pause", actor="room:lobby")
    for n in range(5):
        send(ann, room="lobby", text=f"p{n}")
    for n in range(5):
        assert receive(bob)["text"] == f"p{n}"
    view = actors(server)["room:lobby"]
    assert view["paused"] is True and view["mailbox"] == 5 and view["history"] == 2
    ok(server, "resume", actor="room:lobby")
    assert history(server, "lobby") == ["one", "two", "p0", "p1", "p2", "p3", "p4"]

    # delay at the hub: held at least that long, then delivered in order
    ok(server, "delay", ms=300)
    sent_at = time.monotonic()
    send(ann, room="lobby", text="late")
    assert receive(bob)["text"] == "late"
    assert time.monotonic() - sent_at >= 0.3
    assert ok(server, "delay", ms=0)["actor"]["delay_ms"] == 0

    # slow down a session: its outbox fills until the hub cuts it off (1008)
    for _ in range(6):  # catch up on the echoes of everything above
        receive(ann)
    ok(server, "slow", actor=session_of(server, "bob"), ms=200)
    for n in range(40):
        send(ann, room="lobby", text=f"s{n}")
    assert receive_close(bob, timeout=15) == (1008, "slow consumer")
    assert metric(server, "nane_controls_total", control="slow") == 1
    assert metric(server, "nane_controls_total", control="crash") == 1
    ann.close()


@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_disconnect_kind_as_a_raw_client_sees_it(start_server, mode):
    server = start_server(mode, controls=1, controls_token=TOKEN)
    for code in ("1000", "1001", "1011"):
        ws = server.connect(f"closed{code}")
        ok(server, "disconnect", actor=session_of(server, f"closed{code}"), how=code)
        assert receive_close(ws) == (int(code), "fault control")
    wait_for(lambda: metric(server, "nane_disconnects_total", reason="control") == 3,
             what="3 control disconnects counted")

    raw = raw_upgrade(server.port, "dropped")
    ok(server, "disconnect", actor=session_of(server, "dropped"), how="drop")
    opcodes, code = read_frames_until_end(raw, timeout=5)
    assert OP_CLOSE not in opcodes and code is None  # no close frame: the TCP connection just ends

    raw = raw_upgrade(server.port, "silent")
    ok(server, "disconnect", actor=session_of(server, "silent"), how="silent", seconds=2)
    raw.sendall(client_frame(OP_TEXT, b'{"ping": true}'))
    raw.sendall(client_frame(OP_PING, b"are you there"))  # a protocol ping, unanswered too
    opcodes, code = read_frames_until_end(raw, timeout=10)
    # No pong, no close frame: silence, in every mode (we read every mode's frames ourselves).
    assert opcodes == [] and code is None


def test_paused_actors_still_show_their_state_and_a_slowed_one_holds_nothing_up(start_server):
    """The actor view and /metrics read an actor's own state by message (`Describe`): a paused
    actor still answers it; one slowed down past the wait is shown with the runtime's
    counters alone, and a scrape leaves its series out rather than hang."""
    server = start_server(controls=1, controls_token=TOKEN)
    ws = server.connect("ann")
    send(ws, room="lobby", text="one")
    assert receive(ws)["text"] == "one"
    assert actors(server)["room:lobby"]["history"] == 1
    for actor in ("room:lobby", "hub", "registry"):  # the registry finds the room: last
        ok(server, "pause", actor=actor)
    started = time.monotonic()
    view, scraped = actors(server), scrape(server)
    assert time.monotonic() - started < 2
    assert view["hub"]["paused"] is True and view["hub"]["sessions"] == 1
    assert view["registry"]["paused"] is True and view["registry"]["rooms"] == 1
    assert view["room:lobby"]["paused"] is True and view["room:lobby"]["history"] == 1
    assert scraped[("nane_sessions", ())] == 1 and scraped[("nane_rooms", ())] == 1
    for actor in ("registry", "hub", "room:lobby"):
        ok(server, "resume", actor=actor)

    ok(server, "slow", actor="hub", ms=3000)  # each message waits 3 s: longer than any wait
    try:
        started = time.monotonic()
        scraped = scrape(server)
        assert time.monotonic() - started < 2.5
        assert ("nane_sessions", ()) not in scraped and scraped[("nane_rooms", ())] == 1
        assert ("nane_mailbox_messages", (("actor", "hub"),)) in scraped
        hub = actors(server)["hub"]
        assert hub["slow_ms"] == 3000 and "sessions" not in hub and hub["alive"] is True
    finally:
        ok(server, "slow", actor="hub", ms=0)
    ws.close()


@pytest.mark.parametrize("mode", ALL_MODES)
def test_crash_until_give_up_then_forget_everything(start_server, mode):
    server = start_server(mode, controls=1, controls_token=TOKEN)
    ws = server.connect("ann")
    send(ws, room="Lobby", text="before")
    assert receive(ws)["text"] == "before"

    gave_up = ok(server, "crash-until-give-up", actor="room:lobby")
    assert gave_up["crashes"] >= 1 and gave_up["actor"]["alive"] is False
    assert gave_up["actor"]["restarts"] == 5  # 5 restarts in 10 s, then the supervisor gives up
    # The registry forgot it: no room, no history; the next message makes a fresh one.
    wait_for(lambda: server.get("/api/rooms")["result"] == [], what="the room forgotten")
    assert server.request("/api/rooms/lobby/history")[0] == 404
    send(ws, room="lobby", text="after")
    assert receive(ws)["text"] == "after"
    assert history(server, "lobby") == ["after"]
    assert "room:lobby" in actors(server) and actors(server)["room:lobby"]["restarts"] == 0
    assert control(server, "crash-until-give-up", actor="hub")[0] == 409

    # forget everything: uptime from zero, no rooms, every connection closed with 1001
    uptime = server.get("/api/settings")["result"]["uptime"]
    forgot = ok(server, "forget")
    assert forgot["rooms"] == 1 and forgot["sessions"] == 1
    assert receive_close(ws) == (1001, "fault control: server restarting")
    assert server.get("/api/settings")["result"]["uptime"] < uptime
    assert server.get("/api/rooms")["result"] == []
    assert metric(server, "nane_controls_total", control="forget") == 1


def test_bad_parameters_are_clear_errors(start_server):
    server = start_server(controls=1, controls_token=TOKEN)
    assert control(server, "crash")[0] == 400
    assert control(server, "crash", actor="room:nowhere")[0] == 404
    assert control(server, "slow", actor="hub", ms="fast")[0] == 400
    assert control(server, "slow", actor="hub", ms=10 ** 9)[0] == 400
    assert control(server, "disconnect", actor="hub")[0] == 409
    ws = server.connect("ann")
    assert control(server, "disconnect", actor=session_of(server, "ann"), how="1006")[0] == 400
    for _ in range(4):
        assert ok(server, "crash", actor="hub")["actor"]["alive"]
    status, answer = control(server, "crash", actor="hub")  # the fifth would risk the chat
    assert status == 409 and "give up" in answer["error"]
    send(ws, room="r", text="still here")
    assert receive(ws)["text"] == "still here"
