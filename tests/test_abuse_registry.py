"""The sequencer never stops the world: each finding of the registry issue, reproduced.

A real server on loopback, attacked as the issue describes (bounded in count
and time), while a `Watch` probes a bystander. Resumes are served by the hub
from what it delivered, so neither a resume loop nor a huge replay nor a
malformed position touches the sequencer; budgets are shared fairly by client
address (`X-Forwarded-For` from the trusted loopback proxy names the address).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse

import pytest

from actors.chat import resume
from tests.conftest import receive, send
from tests.ops_helpers import wait_for
from tests.test_abuse import ALL_MODES, Watch
from tests.test_controls import TOKEN, actors, ok

FAST = 100_000  # max_messages_per_second for a test's own posters


def address(n: int) -> dict:
    """Connect as if from client address 203.0.113.n (the loopback proxy is trusted)."""
    return {"header": {"X-Forwarded-For": f"203.0.113.{n}"}}


def fill(server, rooms: int, text: str = "x", who: int = 1) -> list[dict]:
    """One message into each of `rooms` rooms; their `?v=2` echoes."""
    poster = server.connect("filler", query="v=2", **address(who))
    echoes = []
    for i in range(rooms):
        send(poster, room=f"room{i}", text=text, id=f"f{i}")
    while len(echoes) < rooms:
        frame = receive(poster, timeout=30)
        assert "error" not in frame, frame
        echoes.append(frame)
    poster.close()
    return echoes


def resume_from(server, since: str, who: int = 2):
    return server.connect("resumer", query="v=2&since=" + urllib.parse.quote(since), **address(who))


@pytest.mark.parametrize("mode", ALL_MODES)
def test_a_resume_loop_across_1000_rooms_slows_only_the_looper(start_server, mode):
    """Finding 1: four loops of `?v=2&since=<old>` connects stalled every post for minutes."""
    server = start_server(mode, max_messages_per_second=FAST,
                          max_messages_per_second_per_address=FAST)
    echoes = fill(server, 1000)
    old = echoes[0]["pos"]
    answers: list[dict] = []
    stop = threading.Event()

    def loop():
        deadline = time.monotonic() + 5
        for _ in range(2000):  # bounded in count and time
            if stop.is_set() or time.monotonic() > deadline:
                return
            ws = resume_from(server, old)
            first = receive(ws, timeout=10)
            while "replayed" not in first and "gone" not in first:
                first = receive(ws, timeout=10)
            answers.append(first)
            ws.close()

    with Watch(server, f"registry_resume_loop[{mode}]", deadline=1.0) as watch:
        loops = [threading.Thread(target=loop, daemon=True) for _ in range(4)]
        for thread in loops:
            thread.start()
        for thread in loops:
            thread.join(30)
        stop.set()
        watch.assert_alive()
    replayed = [a for a in answers if "replayed" in a]
    limited = [a for a in answers if a.get("gone") == resume.RATE_LIMITED]
    assert replayed and all(a["replayed"] >= 999 for a in replayed)  # and the probes
    assert len(limited) > len(replayed)  # the loop's own address ran out of resumes
    again = resume_from(server, old, who=3)  # another address resumes as ever
    assert receive(again)["text"] == "x"


@pytest.mark.parametrize("mode", ALL_MODES)
def test_positions_in_other_scripts_digits_are_not_positions(start_server, mode):
    """Finding 3: `run:١-١` or `run:²` passed `str.isdigit`; a session that sent one got nothing."""
    server = start_server(mode)
    start = server.connect("probe", query="v=2&since=")
    run = receive(start)["pos"].split(":")[0]
    for since in (f"{run}:\u0661", f"{run}:\u00b2", f"{run}:\u0661-\u0661", f"{run}:1-\uff11"):
        ws = resume_from(server, since)
        gone = receive(ws)
        assert gone["gone"] == resume.NOT_A_POSITION, since
        send(ws, room="digits", text=since)
        assert receive(ws)["text"] == since  # and it is live
        ws.close()
    assert "level=error" not in server.log()


@pytest.mark.parametrize("mode", ["embedded", "gunicorn-gevent"])
def test_a_replay_larger_than_the_outbox_is_gone_not_a_1008(start_server, mode):
    """Finding 5: 80 messages of 60 KB after the position ended in 1008 "slow consumer"."""
    server = start_server(mode, max_messages_per_second=FAST,
                          max_messages_per_second_per_address=FAST)
    first = server.connect("first", query="v=2&since=")
    since = receive(first)["pos"]
    big = "\x01" * 10_500  # about 63 KB as JSON
    poster = server.connect("poster", **address(1))
    for i in range(80):
        send(poster, room="big", text=big, id=f"b{i}")
        receive(poster, timeout=30)
    ws = resume_from(server, since)
    gone = receive(ws, timeout=30)
    assert gone["gone"] in (resume.TOO_LARGE, resume.TOO_OLD)
    send(ws, room="after", text="still here")
    assert receive(ws, timeout=30)["text"] == "still here"


@pytest.mark.parametrize("mode", ["embedded", "gunicorn-geventwebsocket"])
def test_one_address_cannot_erase_the_other_users_history(start_server, mode):
    """Finding 6: six connections from one address wiped all 30 legit rooms in 0.41 s."""
    server = start_server(mode, max_history_bytes=3 * 1024 * 1024,
                          max_history_bytes_per_address=1024 * 1024,
                          max_messages_per_second=FAST, max_messages_per_second_per_address=FAST)
    legit = server.connect("ann", **address(1))
    for room in range(30):
        for i in range(20):
            send(legit, room=f"legit{room}", text=f"m{i}")
    for _ in range(600):
        receive(legit, timeout=30)
    big = "\x01" * 10_500
    attackers = [server.connect(f"mallory{n}", **address(66)) for n in range(6)]
    with Watch(server, f"registry_history_share[{mode}]") as watch:
        for i in range(40):  # 240 x 63 KB = 15 MB, five times the whole budget
            for n, attacker in enumerate(attackers):
                send(attacker, room=f"legit{(i + n) % 30}" if i % 2 else f"spam{i}-{n}",
                     text=big)
            for attacker in attackers:  # read as it goes, so no outbox piles up
                seen = 0
                while seen < len(attackers):
                    seen += receive(attacker, timeout=30).get("sender", {}).get(
                        "username", "").startswith("mallory")
        watch.assert_alive()
    for room in range(30):
        history = server.get(f"/api/rooms/legit{room}/history")["result"]
        assert [m["text"] for m in history if m["sender"]["username"] == "ann"] == [
            f"m{i}" for i in range(20)], room
    assert server.get("/api/settings")["result"]["max_history_bytes_per_address"] == 1024 * 1024


@pytest.mark.parametrize("mode", ["embedded", "gunicorn-gevent"])
def test_one_address_cannot_push_another_users_room_out_through_max_rooms(start_server, mode):
    """Finding 6: ten connections from one address made a 50-message room be forgotten."""
    server = start_server(mode, max_rooms=100, max_rooms_per_address=20,
                          max_messages_per_second=FAST, max_messages_per_second_per_address=FAST)
    legit = server.connect("ann", **address(1))
    for i in range(50):
        send(legit, room="home", text=f"m{i}")
    attackers = [server.connect(f"mallory{n}", **address(66)) for n in range(10)]
    for i in range(50):
        for n, attacker in enumerate(attackers):
            send(attacker, room=f"spam{n}-{i}", text="x")
    seen = 0
    while seen < 500 + 50:
        seen += "text" in receive(legit, timeout=30)
    rooms = [r["name"] for r in server.get("/api/rooms")["result"]]
    assert "home" in rooms and len(rooms) == 21
    history = server.get("/api/rooms/home/history")["result"]
    assert [m["text"] for m in history] == [f"m{i}" for i in range(50)]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_sigterm_with_a_backlog_delivers_every_accepted_post(start_server, mode):
    """Finding 1's end: `registry failed on Post: ActorStopped('hub is stopped')` lost posts."""
    server = start_server(mode, controls=1, controls_token=TOKEN,
                          max_messages_per_second=FAST, max_messages_per_second_per_address=FAST)
    ok(server, "slow", actor="registry", ms=10)  # a backlog of posts forms in its mailbox
    posters = [server.connect(f"p{n}", query="v=2") for n in range(4)]
    for i in range(60):
        for n, poster in enumerate(posters):
            send(poster, room=f"r{n}", text=f"m{i}", id=f"{n}-{i}")
    wait_for(lambda: actors(server)["registry"]["mailbox"] >= 40, what="a backlog")
    stopper = threading.Thread(target=server.stop, daemon=True)
    stopper.start()
    for n, poster in enumerate(posters):
        answered: list[str] = []
        while True:
            try:
                frame = json.loads(poster.recv())
            except Exception:  # the close frame (1001) ends the stream
                break
            if frame.get("sender", {}).get("username") == f"p{n}" or "error" in frame:
                answered.append(frame["id"])
        # what was answered (echoed, or refused as the stop began) is a prefix of what
        # was sent: nothing the server took in before its last answer was lost unanswered
        assert sorted(answered, key=lambda id: int(id.split("-")[1])) == [
            f"{n}-{i}" for i in range(len(answered))], (n, answered)
        assert len(set(answered)) == len(answered)
    stopper.join(15)
    assert server.process.returncode == 0
    log = server.log_path.read_text(errors="replace")  # the stopped server's whole log
    assert "failed on" not in log and "level=error" not in log, log[-3000:]
