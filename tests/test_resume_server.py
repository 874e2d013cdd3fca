"""`?v=2&since` against real server processes: a client cut off mid-stream resumes exactly."""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
import time

import pytest

from tests.conftest import RECEIVE_TIMEOUT, receive, send

ALL_MODES = ["embedded", "gunicorn-geventwebsocket", "gunicorn-gevent"]
ROOMS = ["one", "Two", "three"]
FAST = 10_000  # max_messages_per_second: the poster is a test, not a flood


def cut(ws) -> None:
    """Drop the TCP connection at once: a reset, no close frame (a phone losing its network)."""
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.sock.close()


def start_posting(server, total: int, seed: int) -> threading.Thread:
    """Post `total` messages into several rooms from another client, paced, in the background."""
    rng = random.Random(seed)

    def run():
        poster = server.connect("poster")
        for i in range(total):
            send(poster, room=rng.choice(ROOMS), text=f"m{i}", id=f"p{i}")
            if i % 10 == 0:
                time.sleep(0.01)
        for _ in range(total):  # its own echoes: everything has been accepted
            receive(poster)
        poster.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def read_messages(ws, count: int, into: list, timeout: float = 20.0) -> None:
    """Read frames until `count` messages are in `into` (fails after `timeout` s)."""
    deadline = time.monotonic() + timeout
    while len(into) < count:
        assert time.monotonic() < deadline, f"only {len(into)} of {count} messages"
        frame = receive(ws)
        assert "gone" not in frame, frame
        if "text" in frame:
            into.append(frame)


def resume_after_cut(first_server, second_server, total: int, seed: int) -> list[dict]:
    """Connect, read a random part of the stream, cut, resume with `since` elsewhere; all seen."""
    reader = first_server.connect("reader", query="v=2&since=")
    start = receive(reader)
    assert start["replayed"] == 0
    posting = start_posting(first_server, total, seed)
    before: list[dict] = []
    read_messages(reader, random.Random(seed).randrange(1, total // 2), before)
    cut(reader)
    since = before[-1]["pos"]
    again = second_server.connect("reader", query="v=2&since=" + since)
    after: list[dict] = []
    read_messages(again, total - len(before), after)
    posting.join(RECEIVE_TIMEOUT * 4)
    send(again, room="end", text="sentinel")
    assert receive(again)["text"] == "sentinel"  # the next frame: nothing came twice
    again.close()
    return before + after


def assert_same_as_history(server, seen: list[dict], total: int) -> None:
    assert sorted(f["text"] for f in seen) == sorted(f"m{i}" for i in range(total))
    assert len({f["pos"] for f in seen}) == total
    created = [f["created"] for f in seen]
    assert created == sorted(created)  # the one order every connection sees
    for room in ROOMS:
        history = server.get(f"/api/rooms/{room}/history")["result"]
        assert [f["id"] for f in seen if f["room"] == room] == [m["id"] for m in history]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_a_client_cut_mid_stream_resumes_with_since_no_gap_no_duplicate(start_server, mode):
    server = start_server(mode, max_messages_per_second=FAST)
    total = 200
    seen = resume_after_cut(server, server, total, seed=len(mode))
    assert_same_as_history(server, seen, total)


def test_a_restarted_server_answers_gone_and_the_stream_goes_on(start_server):
    server = start_server()
    watcher = server.connect("w", query="v=2&since=")
    position = receive(watcher)["pos"]
    server.stop()
    restarted = start_server(port=server.port)
    ws = restarted.connect("w", query="v=2&since=" + position)
    gone = receive(ws)
    assert gone["gone"] == "position from another server run"
    assert gone["pos"] != position
    send(ws, room="r", text="after the restart")
    assert receive(ws)["pos"] != gone["pos"]


def test_legacy_frames_are_byte_for_byte_what_history_keeps(server):
    plain, opted = server.connect("plain"), server.connect("opted", query="v=2")
    send(plain, room="bytes", text="самые обычные байты", id="b1")
    legacy = plain.recv()
    positioned = opted.recv()
    status, _, body = server.request("/api/rooms/bytes/history")
    assert body.decode() == '{"result":[' + legacy + "]}"
    assert "pos" not in json.loads(legacy)
    assert positioned == legacy[:-1] + ',"pos":' + json.dumps(json.loads(positioned)["pos"]) + "}"


def test_since_without_v2_is_ignored(server):
    plain = server.connect("plain", query="since=anything:1")
    send(plain, room="r", text="hello")
    assert set(receive(plain)) == {"room", "created", "sender", "text"}  # no seam, no gone
