"""How long posts wait while clients resume (`?v=2&since=`), in memory and on Redis.

    python -m bench.resume_cost                     # this tree
    python -m bench.resume_cost --before ../old     # and another checkout, side by side
    python -m bench.resume_cost --quick             # seconds, for CI: fails on a lost post

A real server on loopback holds 1,000 messages spread over 1, 100 or 1,000
rooms. Two clients resume from before the first of them in a loop (connect,
read the replay up to its seam, close) while a poster posts every 50 ms and
times its own echo. The figure is the poster's wait: median and worst, and
how many resumes were served meanwhile (LOST: a post never came back).
`lifted` runs with the per-address resume budget lifted, so every resume
really replays 1,000 messages (what a replay costs); `limited` runs with the
default budget (what a loop costs). `impatient` resumers hang up as soon as
they have asked (the issue's attack: a loop of connects that never reads its
replay), counted as asked, not served.
With `--before` every figure is printed for both trees, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import websocket

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.ports import free_port  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

MESSAGES = 1000
FAST = "100000"


class Server:
    """`python -m app` from a checkout, on a free loopback port."""

    def __init__(self, tree: Path, settings: dict[str, str]):
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("NANE_")}
        env.update({f"NANE_{k.upper()}": v for k, v in settings.items()})
        env.pop("REDIS_URL", None)
        self.process = subprocess.Popen([sys.executable, "-m", "app", "--addr",
                                         f"127.0.0.1:{self.port}"], cwd=tree, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.connect("ready").close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"server in {tree} did not start") from None
                time.sleep(0.05)  # a port that is not open yet: nothing to await

    def connect(self, who: str, query: str = "") -> websocket.WebSocket:
        return websocket.create_connection(
            f"ws://127.0.0.1:{self.port}/ws?username={who}&{query}", timeout=30)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def frames_until(ws, done, seconds: float = 30.0) -> dict:
    """Read until a frame `done` accepts; a timeout after `seconds` however many others come."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        frame = json.loads(ws.recv())
        if done(frame):
            return frame
    raise websocket.WebSocketTimeoutException(f"nothing awaited came in {seconds} s")


def measure(tree: Path, rooms: int, redis_url: str, lifted: bool, seconds: float,
            impatient: bool = False) -> dict:
    settings = {"max_messages_per_second": FAST, "max_messages_per_second_per_address": FAST}
    if lifted:
        settings["max_resumes_per_second_per_address"] = FAST
    if redis_url:
        settings["redis_url"] = redis_url
    server = Server(tree, settings)
    try:
        first = server.connect("first", "v=2&since=")
        since = json.loads(first.recv())["pos"]
        first.close()
        poster = server.connect("poster", "v=2")
        for i in range(MESSAGES):
            poster.send(json.dumps({"room": f"room{i % rooms}", "text": f"m{i}"}))
        lost = 0
        try:
            for _ in range(MESSAGES):
                frames_until(poster, lambda f: "text" in f)
        except websocket.WebSocketTimeoutException:  # posts lost (the old Redis registry did)
            lost = 1
            poster.close()
            poster = server.connect("poster", "v=2")
        stop = threading.Event()
        resumes = {"replayed": 0, "gone": 0, "stalled": 0}

        def resume_loop():
            for _ in range(100_000):  # bounded in count, and in time by `stop`
                if stop.is_set():
                    return
                try:
                    ws = server.connect("resumer", "v=2&since=" + since)
                    if impatient:  # the attack: ask for a replay and hang up at once
                        ws.shutdown()
                        resumes["gone"] += 1
                        continue
                    seam = frames_until(ws, lambda f: "replayed" in f or "gone" in f)
                except (OSError, websocket.WebSocketException):  # a server that stalls 30 s
                    resumes["stalled"] += 1
                    continue
                resumes["replayed" if "replayed" in seam else "gone"] += 1
                ws.shutdown()

        loops = [threading.Thread(target=resume_loop, daemon=True) for _ in range(2)]
        for loop in loops:
            loop.start()
        waits = []
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline:
            n += 1
            sent = time.perf_counter()
            probe = f"p{n}"
            poster.send(json.dumps({"room": "probe", "text": probe, "id": probe}))
            try:
                frames_until(poster, lambda f, probe=probe: f.get("id") == probe)
            except websocket.WebSocketTimeoutException:  # no echo in 30 s: counted, and enough
                lost += 1
                waits.append(time.perf_counter() - sent)
                break
            waits.append(time.perf_counter() - sent)
            time.sleep(0.05)  # the poster's pace, not a synchronisation
        stop.set()
        for loop in loops:
            loop.join(60)
        poster.close()
        return {"median_ms": statistics.median(waits) * 1000, "max_ms": max(waits) * 1000,
                "resumes": resumes["replayed"], "gone": resumes["gone"] + resumes["stalled"],
                "lost": lost}
    finally:
        server.stop()


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_argument("--before", type=Path, help="another checkout to measure side by side")
    cli.add_argument("--seconds", type=float, default=4.0)
    cli.add_argument("--quick", action="store_true", help="1,000 rooms only, 1 s, memory only")
    cli.add_argument("--impatient", action="store_true",
                     help="only the attack: resumers that hang up without reading")
    args = cli.parse_args()
    trees = [("after", ROOT)] + ([("before", args.before.resolve())] if args.before else [])
    seconds = 1.0 if args.quick else args.seconds
    stores = ["memory"] if args.quick else ["memory", "redis"]
    cases = [(1000, True, False)] if args.quick else [
        (1, True, False), (100, True, False), (1000, True, False), (1000, False, False),
        (1000, True, True), (1000, False, True)]
    if args.impatient:
        cases = [case for case in cases if case[2]]
    print(f"post wait while 2 clients resume from before {MESSAGES} messages in a loop "
          f"({seconds:g} s each; ms: median / worst; resumes replayed + gone)")
    failed = False
    with tempfile.TemporaryDirectory() as logs:
        for store in stores:
            for rooms, lifted, impatient in cases:
                row = (f"{store:>6} {rooms:>5} rooms {'lifted' if lifted else 'limited':>8}"
                       f"{' impatient' if impatient else ''}:")
                figures = {}
                for name, tree in trees:
                    redis = (RedisServer(shutil.which("redis-server") or "redis-server",
                                         Path(logs)) if store == "redis" else None)
                    try:
                        f = figures[name] = measure(tree, rooms, redis.url if redis else "",
                                                    lifted, seconds, impatient)
                    finally:
                        if redis is not None:
                            redis.stop()
                    failed |= f["lost"] > 0 and name == "after"
                    row += (f"  {name} {f['median_ms']:7.1f} / {f['max_ms']:8.1f}"
                            f"  ({f['resumes']} + {f['gone']}{' LOST' if f['lost'] else ''})")
                if len(figures) == 2:
                    ratio = figures["before"]["max_ms"] / figures["after"]["max_ms"]
                    row += f"  worst before/after x{ratio:.1f}"
                print(row, flush=True)
    if failed:
        raise SystemExit("a probe's echo never came back")


if __name__ == "__main__":
    main()
