"""Mailbox limits seen from a client.

Bytes bound a slow reader's outbox, and a burst is slowed, not dropped.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque

import psutil

from app.websocket.codec import OP_TEXT
from tests.conftest import receive, send
from tests.ops_helpers import raw_upgrade, read_frames_until_end
from tests.wsframes import FrameParser, client_frame


def test_clients_that_stop_reading_are_cut_off_by_bytes_and_memory_stays_bounded(start_server):
    budget = 1024 * 1024
    server = start_server(max_outbox_bytes=budget, max_message_length=20000,
                          max_messages_per_second=10000, max_messages_in_room=10)
    process = psutil.Process(server.process.pid)
    stuck = [raw_upgrade(server.port, f"stuck{i}", receive_buffer=4096) for i in range(4)]
    readers = [server.connect(f"reader{i}") for i in range(2)]
    sender = server.connect("sender")
    rss_before = process.memory_info().rss
    text = "€" * 19990  # about 60 KB of JSON each
    count = 300  # 18 MB: a frame count far below max_outbox_messages (4096)
    for i in range(count):
        sender.send(json.dumps({"room": "big", "text": f"{i:05d}{text}"}, ensure_ascii=False))
        if i % 10 == 9:  # the readers keep up; only the stuck ones fall behind
            for ws in readers + [sender]:
                for n in range(i - 9, i + 1):
                    assert receive(ws)["text"].startswith(f"{n:05d}")
    rss_after = process.memory_info().rss
    for sock in stuck:  # each was closed: a 1008 if its close frame got through, else an end
        _, code = read_frames_until_end(sock, 10.0)
        assert code in (1008, None)
        sock.close()
    log = server.log()
    assert log.count('reason="slow consumer"') >= len(stuck), log
    # 18 MB went out; four outboxes of 1 MiB (and the frames in their last writes) stayed.
    assert rss_after - rss_before < 12 * 1024 * 1024, (rss_before, rss_after)
    send(sender, room="big", text="after")
    for ws in readers:
        assert receive(ws)["text"] == "after"


def test_a_fast_burst_within_the_rate_limits_loses_nothing(start_server):
    """Far more posts at once than the registry's mailbox holds: the reader waits, nothing drops."""
    server = start_server(max_messages_per_second=1_000_000, max_flood_seconds=1_000_000)
    count = 25_000  # the registry's mailbox holds 10,000
    burst = b"".join(client_frame(OP_TEXT, json.dumps({"room": "burst", "text": str(i)}).encode())
                     for i in range(count))
    reader = server.connect("reader")
    sender = raw_upgrade(server.port, "sender", timeout=30.0)
    received: dict[str, list[str]] = {}

    def read_all(name, next_text):
        texts = received.setdefault(name, [])
        deadline = time.monotonic() + 60
        while len(texts) < count and time.monotonic() < deadline:
            texts.append(next_text())

    reader.settimeout(30)
    threads = [threading.Thread(target=read_all, args=("reader", lambda: json.loads(
        reader.recv())["text"])), threading.Thread(target=read_all, args=(
            "sender", _text_reader(sender)))]
    for thread in threads:
        thread.start()
    sender.sendall(burst)  # as fast as the socket takes it
    for thread in threads:
        thread.join(90)
    assert received["reader"] == [str(i) for i in range(count)]
    assert received["sender"] == [str(i) for i in range(count)]
    assert 'reason="server busy' not in server.log() and "slow consumer" not in server.log()


def _text_reader(sock):
    """`next_text()` over a raw socket: the `text` of each server text frame, in order."""
    parser, texts = FrameParser(), deque()

    def next_text() -> str:
        while not texts:
            chunk = sock.recv(65536)
            assert chunk, "connection closed"
            texts.extend(json.loads(payload)["text"] for _, opcode, payload in parser.feed(chunk)
                         if opcode == OP_TEXT)
        return texts.popleft()

    return next_text
