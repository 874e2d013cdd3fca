#!/usr/bin/env python3
"""nane's websocket codec (app/websocket/codec.py) against wsproto, frame for frame, no network.

    python bench/codec.py [--frames 20000] [--repeats 7]

wsproto (bench/requirements.txt) is the sans-I/O library nane could
have used instead of its own codec; issue 14 asks to use it wherever it does
not cost the benchmark figures. This measures the two jobs the server does per
frame, on chat-sized JSON messages (100 to 300 bytes, a fixed seed):

- parse: one masked client text frame in, its text out. Ours is the
  transport's path (`parse_header`, `Incoming.check`, `unmask`, UTF-8
  decode) and, for the test clients' and generator's path, `FrameParser.feed`;
  wsproto's is a post-handshake server `Connection`: `receive_data(frame)`,
  then its `events()`. Both are handed one frame at a time, as a chat server
  reads them.
- build: one server text frame out. Ours is `server_frame(OP_TEXT, json)`,
  from the JSON bytes a room already has (`Frame.json`); wsproto's is
  `Connection.send(TextMessage(text))`, which takes text only, so the UTF-8
  encoding it does is part of its figure.

Prints µs per frame (the median of `repeats` passes over `frames` frames)
and wsproto / ours. Bounded: a fixed number of frames and passes.
"""
import argparse
import json
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from wsproto.connection import Connection, ConnectionType  # noqa: E402
from wsproto.events import TextMessage  # noqa: E402

from app.websocket.codec import OP_TEXT, Incoming, parse_header, server_frame, unmask  # noqa: E402
from tests.wsframes import FrameParser, client_frame  # noqa: E402

MAX_MESSAGE_BYTES = 32 * 1024


def chat_messages(count: int) -> list[bytes]:
    """`count` JSON messages as a room sends them, 100 to 300 bytes each."""
    rng = random.Random(14)
    messages = []
    for i in range(count):
        text = "".join(rng.choice("abcdefghij klmnopqrstuvwxyz,.é")
                       for _ in range(rng.randint(10, 200)))
        messages.append(json.dumps({"room": "Lobby", "created": "2026-12-02T07:00:00.123456789Z",
                                    "sender": f"user{i % 50}", "text": text},
                                   ensure_ascii=False).encode())
    return messages


def parse_ours(frames: list[bytes]) -> int:
    incoming, total = Incoming(MAX_MESSAGE_BYTES), 0
    for frame in frames:
        fin, opcode, length, mask, size = parse_header(frame)
        incoming.check(fin, opcode, length, mask)
        text = unmask(frame[size:size + length], mask).decode("utf-8")
        incoming.finish()
        total += len(text)
    return total


def parse_ours_incremental(frames: list[bytes]) -> int:
    parser, total = FrameParser(), 0
    for frame in frames:
        for _, _, payload in parser.feed(frame):
            total += len(payload.decode("utf-8"))
    return total


def parse_wsproto(frames: list[bytes]) -> int:
    connection, total = Connection(ConnectionType.SERVER), 0
    for frame in frames:
        connection.receive_data(frame)
        for event in connection.events():
            total += len(event.data)
    return total


def build_ours(messages: list[bytes], texts: list[str]) -> int:
    return sum(len(server_frame(OP_TEXT, message)) for message in messages)


def build_wsproto(messages: list[bytes], texts: list[str]) -> int:
    connection = Connection(ConnectionType.SERVER)
    return sum(len(connection.send(TextMessage(data=text))) for text in texts)


def per_frame_us(job, args, count: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        job(*args)
        times.append((time.perf_counter() - started) / count * 1e6)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    messages = chat_messages(args.frames)
    texts = [m.decode() for m in messages]
    frames = [client_frame(OP_TEXT, m) for m in messages]
    # the same text comes out of every parser, and the same bytes out of both builders
    assert parse_ours(frames) == parse_ours_incremental(frames) == parse_wsproto(frames)
    assert Connection(ConnectionType.SERVER).send(TextMessage(data=texts[0])) == server_frame(
        OP_TEXT, messages[0])
    sizes = [len(m) for m in messages]
    print(f"{args.frames} chat messages of {min(sizes)}-{max(sizes)} bytes (median "
          f"{statistics.median(sizes):.0f}); µs per frame, median of {args.repeats} passes")
    rows = [("parse a masked client text frame", parse_ours, parse_wsproto, (frames,)),
            ("  ... with FrameParser.feed", parse_ours_incremental, parse_wsproto, (frames,)),
            ("build a server text frame", build_ours, build_wsproto, (messages, texts))]
    print(f"{'':36} {'nane':>8} {'wsproto':>8} {'wsproto/nane':>13}")
    for label, ours, theirs, job_args in rows:
        mine = per_frame_us(ours, job_args, args.frames, args.repeats)
        other = per_frame_us(theirs, job_args, args.frames, args.repeats)
        print(f"{label:36} {mine:8.2f} {other:8.2f} {other / mine:12.1f}x")


if __name__ == "__main__":
    main()
