#!/usr/bin/env python3
"""The fan-out with no sockets: what the actors themselves cost per receiver, and what the GC does.

    python bench/inprocess.py [--sessions 2000] [--messages 2000] [--window 4]

A registry, the hub and N sessions whose transport only counts frames. One
poster keeps `window` messages in flight (it waits until every session has
the oldest). Prints µs per delivered frame, garbage collections per 10,000
messages by generation, the longest collection, and the tracked objects at
the end. `--no-gc` switches the cyclic collector off for comparison.
"""
import argparse
import gc
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gevent.event import Event  # noqa: E402

from actors.chat.hub import HubActor, Join  # noqa: E402
from actors.chat.message import Draft  # noqa: E402
from actors.chat.registry import Post, RegistryActor  # noqa: E402
from actors.chat.session import SessionActor  # noqa: E402


class CountingTransport:
    """The far end of a session: counts frames, wakes the poster when a message reached all."""

    def __init__(self, progress):
        self.frames = 0
        self._progress = progress

    def send(self, frames):
        self.frames += len(frames)
        self._progress.reached(self.frames)

    def ping(self):
        pass

    def answered(self):
        return True

    def close(self, code, reason):
        pass


class Progress:
    """How many sessions have each message; set `done` when message k reached every one."""

    def __init__(self, sessions):
        self.sessions = sessions
        self.counts = {}
        self.changed = Event()

    def reached(self, frames):
        self.counts[frames] = self.counts.get(frames, 0) + 1
        self.changed.set()

    def complete(self, k):
        return sum(n for f, n in self.counts.items() if f >= k) >= self.sessions


def main():
    cli = argparse.ArgumentParser()
    cli.add_argument("--sessions", type=int, default=2000)
    cli.add_argument("--messages", type=int, default=2000)
    cli.add_argument("--window", type=int, default=4)
    cli.add_argument("--no-gc", action="store_true")
    args = cli.parse_args()

    collections = [0, 0, 0]
    pauses = []
    started = [0.0]

    def on_gc(phase, info):
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            collections[info["generation"]] += 1
            pauses.append((time.perf_counter() - started[0], info["generation"]))

    hub = HubActor().start()
    registry = RegistryActor(hub, 100, 1024).start()
    progress = Progress(args.sessions)
    transports = []
    for n in range(args.sessions):
        transport = CountingTransport(progress)
        transports.append(transport)
        hub.tell(Join(SessionActor(f"session:{n}", transport, "u", 4096).start()))
    hub.ask(_probe(), timeout=30)
    if args.no_gc:
        gc.disable()
    gc.collect()
    gc.callbacks.append(on_gc)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    sent = 0
    for k in range(1, args.messages + 1):
        registry.tell(Post(Draft("room", f"message {k}"), "poster"))
        sent += 1
        oldest = k - args.window + 1
        while oldest >= 1 and not progress.complete(oldest):
            progress.changed.clear()
            progress.changed.wait(10)
        if oldest >= 1:  # forget what every session has passed
            for f in [f for f in progress.counts if f < oldest]:
                del progress.counts[f]
    while not progress.complete(args.messages):
        progress.changed.clear()
        progress.changed.wait(10)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    gc.callbacks.remove(on_gc)
    delivered = sum(t.frames for t in transports)
    per10k = [round(c * 10_000 / args.messages, 1) for c in collections]
    longest = max((p for p, g in pauses), default=0.0)
    full = [p for p, g in pauses if g == 2]
    print(f"sessions={args.sessions} messages={args.messages} delivered={delivered} "
          f"cpu_us_per_frame={cpu * 1e6 / delivered:.2f} frames_per_s={delivered / elapsed:,.0f} "
          f"gc_per_10k_messages(gen0,gen1,gen2)={per10k} longest_gc_ms={longest * 1000:.1f} "
          f"full_gc_ms_total={sum(full) * 1000:.0f} tracked_objects={len(gc.get_objects())} "
          f"greenlets={_greenlets()}")


def _probe():
    from actors.runtime.actor import Probe
    return Probe()


def _greenlets():
    import greenlet
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet))


if __name__ == "__main__":
    main()
