"""What a `?v=2&since=` resume costs the in-memory sequencer (actors only, no network).

    python -m bench.resume_cost      # from the repository root

The registry takes no post while it gathers a replay (that is what makes the
seam exact), so the figure that matters is how long one resume holds it:
from `Resume` to the seam frame written by the session, for replays spread
over 1, 100 and 1,000 rooms. (The seam frame is written after the replay, so
this includes the session taking the replay out of its outbox.)
"""

from __future__ import annotations

import json
import statistics
import time

import gevent
from gevent.event import Event

from actors.chat.hub import HubActor
from actors.chat.message import Draft
from actors.chat.registry import Post, RegistryActor
from actors.chat.resume import Resume
from actors.chat.session import SessionActor

REPLAY = 1000  # messages after the position (all of them still in a room of 1024)
ROUNDS = 20


class Seam:
    """A transport that only notices the seam frame."""

    def __init__(self):
        self.done = Event()
        self.position = ""
        self.gone = None

    def send(self, frames):
        for frame in frames:
            if b'"replayed"' in frame.json or b'"gone"' in frame.json:
                answer = json.loads(frame.json)
                self.position, self.gone = answer["pos"], answer.get("gone")
                self.done.set()

    def close(self, code, reason):
        pass


def measure(rooms: int) -> list[float]:
    hub = HubActor().start()
    registry = RegistryActor(hub, max_rooms=10_000, max_messages_in_room=1024).start()
    start = Seam()
    first = SessionActor("s0", start, "b", 10_000, positions=True).start()
    registry.tell(Resume(first, "", REPLAY))
    start.done.wait(5)
    position = start.position.rsplit(":", 1)[0] + ":0"  # this run, before any message
    for i in range(REPLAY):
        registry.tell(Post(Draft(f"room{i % rooms}", f"m{i}"), "poster"))
    took = []
    for n in range(ROUNDS):
        seam = Seam()
        session = SessionActor(f"s{n}", seam, "b", 10_000, positions=True).start()
        began = time.perf_counter()
        registry.tell(Resume(session, position, REPLAY))
        assert seam.done.wait(10) and seam.gone is None, seam.gone
        took.append(time.perf_counter() - began)
        session.kill("done")
    registry.stop()
    hub.stop()
    return took


def main() -> None:
    print(f"resume of {REPLAY} messages, {ROUNDS} rounds each: time until the seam frame")
    for rooms in (1, 100, 1000):
        took = sorted(measure(rooms))
        print(f"{rooms:>5} rooms: median {statistics.median(took) * 1000:7.1f} ms, "
              f"max {took[-1] * 1000:7.1f} ms")
        gevent.sleep(0)


if __name__ == "__main__":
    main()
