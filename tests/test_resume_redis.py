"""`?v=2&since` and gap-free delivery across processes sharing a real redis-server."""

from __future__ import annotations

import re
import signal
import time

import redis

from actors.chat import resume
from actors.shared_rooms.store import READER_NAME
from tests.conftest import RECEIVE_TIMEOUT, receive, send
from tests.test_redis import shared, wait_until_serving  # noqa: F401  (a fixture)
from tests.test_resume_server import FAST, assert_same_as_history, read_messages, resume_after_cut


def test_three_processes_a_client_cut_on_one_resumes_on_another(shared):  # noqa: F811
    a, b, c = (shared(mode, max_messages_per_second=FAST)
               for mode in ("embedded", "gunicorn-geventwebsocket", "gunicorn-gevent"))
    total = 200
    seen = resume_after_cut(a, b, total, seed=3)
    assert_same_as_history(c, seen, total)


def test_the_stream_readers_connection_killed_while_posts_go_on_loses_nothing(
        shared, redis_server):  # noqa: F811
    a, b = shared(max_messages_per_second=FAST), shared(max_messages_per_second=FAST)
    watchers = [a.connect("wa"), b.connect("wb")]
    poster = b.connect("poster")
    total = 300
    admin = redis.Redis.from_url(redis_server.url)

    name = f"{READER_NAME}-{a.process.pid}"  # a's reader; b's poster does not need it

    def reader_id():
        return next((c["id"] for c in admin.client_list() if c["name"] == name), None)

    for i in range(total):
        send(poster, room="live", text=f"m{i}", id=f"p{i}")
        if i in (50, 150, 250):
            killed = reader_id()
            assert killed is not None
            admin.client_kill_filter(_id=killed)
            deadline = time.monotonic() + RECEIVE_TIMEOUT
            while reader_id() in (None, killed):  # its reconnect: a new connection, bounded
                assert time.monotonic() < deadline, "the reader did not reconnect"
                time.sleep(0.02)
    for watcher in watchers:
        got: list[dict] = []
        read_messages(watcher, total, got)
        assert [m["id"] for m in got] == [f"p{i}" for i in range(total)]
    # three kills, each of a live reader connection and each followed by a new one (above);
    # the link may not have been marked up again before the next kill, so the log shows 1-3
    assert a.log().count("event=redis_down") >= 1


def test_a_restarted_empty_redis_answers_gone_like_a_restarted_server(
        shared, redis_server):  # noqa: F811
    server = shared()
    reader = server.connect("reader", query="v=2&since=")
    assert receive(reader)["replayed"] == 0  # live from here
    send(reader, room="r", text="before")
    position = receive(reader)["pos"]
    redis_server.kill()
    redis_server.start()
    wait_until_serving(server)
    again = server.connect("reader", query="v=2&since=" + position)
    gone = receive(again)
    assert gone["gone"] == resume.OTHER_RUN
    send(again, room="r", text="after")
    assert receive(again)["text"] == "after"


def test_positions_on_redis_name_the_redis_data_set(shared):  # noqa: F811
    a = shared(max_messages_per_second=FAST)
    reader = a.connect("reader", query="v=2&since=")
    start = receive(reader, RECEIVE_TIMEOUT)
    assert start["replayed"] == 0 and start["pos"].startswith("r")


def test_a_position_older_than_the_stream_keeps_is_gone_end_to_end(shared):  # noqa: F811
    a, b = (shared(max_messages_per_second=FAST, redis_stream_messages=150) for _ in range(2))
    first = a.connect("reader", query="v=2&since=")
    since = receive(first)["pos"]
    first.close()
    poster = b.connect("poster", query="v=2")
    echoes: list[dict] = []
    for batch in range(12):  # well past the stream's 150 (trimmed in whole nodes of 100)
        for i in range(50):
            send(poster, room="r", text=f"m{batch * 50 + i}")
        read_messages(poster, (batch + 1) * 50, echoes)  # paced: every reader keeps up
    for server in (a, b):
        again = server.connect("reader", query="v=2&since=" + since)
        gone = receive(again)  # its `pos` is where that process has read to: maybe not m599 yet
        assert gone["gone"] == resume.TOO_OLD and gone["pos"].split(":")[0] == since.split(":")[0]
        recent = server.connect("reader", query="v=2&since=" + echoes[-2]["pos"])
        assert receive(recent)["text"] == "m599"
        assert receive(recent) == {"pos": echoes[-1]["pos"], "replayed": 1}
    assert "event=stream_gap" not in a.log() + b.log()


def test_a_process_that_fell_behind_the_stream_says_what_it_missed(shared):  # noqa: F811
    a, b = (shared(max_messages_per_second=FAST, redis_stream_messages=100) for _ in range(2))
    watcher = a.connect("watcher", query="v=2&since=")
    assert receive(watcher)["replayed"] == 0
    poster = b.connect("poster", query="v=2")
    echoes: list[dict] = []
    a.process.send_signal(signal.SIGSTOP)  # a stalls (a long GC pause, a swapped-out VM)
    try:
        for batch in range(6):
            for i in range(50):
                send(poster, room="r", text=f"m{batch * 50 + i}")
            read_messages(poster, (batch + 1) * 50, echoes)
    finally:
        a.process.send_signal(signal.SIGCONT)
    got: list[dict] = []
    read_messages(watcher, 1, got)  # a goes on with what the stream still has, in order
    while got[-1]["text"] != "m299":
        read_messages(watcher, len(got) + 1, got)
    texts = [int(m["text"][1:]) for m in got]
    assert texts == sorted(texts) and len(texts) < 300  # some were trimmed before a read them
    assert re.search(r"event=stream_gap missed=\d+", a.log())
