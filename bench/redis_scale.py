"""Scale-out benchmark: 1, 2 and 3 nane processes on one Redis against the in-memory single process.

    python bench/redis_scale.py            # about a minute; prints one table
    python bench/redis_scale.py --quick    # a smaller run, for a smoke test
    python bench/redis_scale.py --source /tmp/old   # the servers from another tree

`--source` runs the nane servers from another checkout (the clients stay the
same), which is how the Redis stream channel was compared with the pub/sub
channel it replaced: `git archive <commit> | tar -x -C /tmp/old`, then one run
with each tree.

Every scenario gets fresh processes: a private `redis-server` on a free
loopback port (persistence off) and `python -m app` servers on free ports,
all on 127.0.0.1. The same clients are spread evenly over the processes.

Two figures per scenario:
- delivered messages/s: senders post a fixed number of messages as fast as
  the servers take them; every client counts the frames it receives; the rate
  is (messages x clients) / (time from the first send until every client has
  every message);
- fan-out latency: one message every 10 ms at light load, stamped with the
  send time; p50/p99 of (receive time - send time) over every receiver;
- with Redis, the post script's CPU time inside Redis per call (`INFO
  commandstats`, `usec_per_call` of EVALSHA): what storing and handing on a
  message costs Redis itself, less disturbed by a busy machine than the rest.

Bounded: message counts are fixed, every wait has a deadline, and a scenario
that misses it reports what it counted. Self-contained (raw-socket clients,
one thread), so it measures the servers, not a websocket library.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the client codec (tests/wsframes.py) and tests/ports.py

from app.websocket.codec import OP_PING, OP_PONG, OP_TEXT  # noqa: E402
from tests.ports import free_port, upgrade  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.wsframes import FrameParser, client_frame  # noqa: E402

RECV_SIZE = 256 * 1024
DEADLINE = 60.0  # seconds any one phase may take


# -- processes -----------------------------------------------------------------


def start_server(log_dir: Path, redis_url: str | None,
                 source: Path = ROOT) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANE_") and k != "REDIS_URL"}
    env.update(NANE_MAX_MESSAGES_PER_SECOND="1000000", NANE_MAX_FLOOD_SECONDS="1000000",
               NANE_MAX_OUTBOX_MESSAGES="1000000", NANE_MAX_MESSAGES_IN_ROOM="1024",
               NANE_MAX_CONNECTIONS_PER_ADDRESS="1000000",
               NANE_MAX_MESSAGES_PER_SECOND_PER_ADDRESS="1000000")
    if redis_url:
        env["NANE_REDIS_URL"] = redis_url
    with open(log_dir / f"nane-{port}.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "app", "--addr", f"127.0.0.1:{port}"],
                                   cwd=source, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited; see {log_dir}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/settings", timeout=1).read()
            return process, port
        except OSError:
            time.sleep(0.05)  # the port is not open yet: nothing to wait on but the port
    raise RuntimeError(f"server did not start; see {log_dir}")


# -- clients -------------------------------------------------------------------


class Client:
    """A websocket that counts the text frames it receives; a probe also reads their payload."""

    def __init__(self, port: int, name: str, probe: bool):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rest = upgrade(self.sock, f"/ws?username={name}", f"127.0.0.1:{port}")
        self.parser = FrameParser(keep_data=probe)  # counters skip payloads
        self.leftover = rest  # frames that came with the handshake's answer
        self.probe = probe
        self.count = 0
        self.latencies: list[int] = []  # ns, probes only
        self.closed = False

    def post(self, text: str) -> None:
        message = json.dumps({"room": "bench", "text": text}).encode()
        self.sock.sendall(client_frame(OP_TEXT, message))

    def read(self) -> None:
        try:
            chunk = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        now = time.monotonic_ns()
        if not chunk:
            self.closed = True
            return
        if self.leftover:
            chunk, self.leftover = self.leftover + chunk, b""
        for _, opcode, payload in self.parser.feed(chunk):
            if opcode == OP_TEXT:
                self.count += 1
                if self.probe:
                    text = json.loads(payload)["text"]
                    if text.startswith("t"):
                        self.latencies.append(now - int(text[1:]))
            elif opcode == OP_PING:  # protocol ping: pong with the same payload
                self.sock.sendall(client_frame(OP_PONG, payload))


class Clients:
    def __init__(self, ports: list[int], count: int, probes_per_process: int):
        self.all: list[Client] = []
        for i in range(count):
            port = ports[i % len(ports)]
            self.all.append(Client(port, f"c{i}", probe=i < probes_per_process * len(ports)))
        self.selector = selectors.DefaultSelector()
        for client in self.all:
            client.sock.setblocking(False)
            self.selector.register(client.sock, selectors.EVENT_READ, client)

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            events = self.selector.select(left)
            if not events:
                return
            for key, _ in events:
                key.data.read()

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while any(c.count < count and not c.closed for c in self.all):
            if time.monotonic() > deadline:
                return False
            self.pump(0.05)
        return all(c.count >= count for c in self.all)

    def send(self, client: Client, text: str) -> None:
        client.sock.setblocking(True)
        try:
            client.post(text)
        finally:
            client.sock.setblocking(False)

    def close(self) -> None:
        for client in self.all:
            client.sock.close()
        self.selector.close()


# -- one scenario --------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def post_script_microseconds(url: str) -> float:
    """Redis's own CPU time per post script call (INFO commandstats): the channel's cost in Redis."""
    stats = subprocess.run(["redis-cli", "-u", url, "INFO", "commandstats"], capture_output=True,
                           text=True, timeout=10).stdout
    for line in stats.splitlines():
        if line.startswith("cmdstat_evalsha:"):
            fields = dict(part.split("=") for part in line.split(":", 1)[1].split(","))
            return float(fields["usec_per_call"])
    return 0.0


def run(processes: int, use_redis: bool, args, log_dir: Path) -> dict:
    started: list[subprocess.Popen] = []
    redis = None
    try:
        url = None
        if use_redis:
            redis = RedisServer(shutil.which("redis-server") or "redis-server", log_dir)
            url = redis.url
        ports = []
        for _ in range(processes):
            process, port = start_server(log_dir, url, args.source)
            started.append(process)
            ports.append(port)
        clients = Clients(ports, args.clients, probes_per_process=2)
        try:
            senders = [clients.all[i] for i in range(args.senders)]  # spread over the processes
            # warm-up: one message through every process
            for sender in senders[:processes]:
                clients.send(sender, "warm")
            expected = processes
            if not clients.wait_for(expected, DEADLINE):
                raise RuntimeError("warm-up messages were not delivered")

            # throughput: fixed count, sent in rounds, reading between rounds
            begin = time.monotonic()
            for n in range(args.messages):
                clients.send(senders[n % len(senders)], f"m{n}")
                if n % len(senders) == len(senders) - 1:
                    clients.pump(0)
            expected += args.messages
            complete = clients.wait_for(expected, DEADLINE)
            seconds = time.monotonic() - begin
            delivered = sum(min(c.count, expected) - processes for c in clients.all)
            rate = delivered / seconds

            # latency: one stamped message every 10 ms from rotating senders
            for n in range(args.probes):
                clients.send(senders[n % len(senders)], f"t{time.monotonic_ns()}")
                clients.pump(0.01)
            expected += args.probes
            clients.wait_for(expected, DEADLINE)
            latencies = [ns / 1e6 for c in clients.all if c.probe for ns in c.latencies]
            lost = sum(max(0, expected - c.count) for c in clients.all)
            script_us = post_script_microseconds(url) if use_redis else 0.0
        finally:
            clients.close()
        return {"processes": processes, "redis": use_redis, "complete": complete,
                "seconds": seconds, "rate": rate, "lost": lost,
                "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
                "script_us": script_us}
    finally:
        for process in reversed(started):
            process.terminate()
        for process in started:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        if redis is not None:
            redis.stop()


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--clients", type=int, default=150, help="websockets, spread over processes")
    cli.add_argument("--senders", type=int, default=6, help="of those, how many post")
    cli.add_argument("--messages", type=int, default=2000, help="messages in the throughput phase")
    cli.add_argument("--probes", type=int, default=200, help="stamped messages, one per 10 ms")
    cli.add_argument("--quick", action="store_true", help="30 clients, 300 messages, 50 probes")
    cli.add_argument("--source", type=Path, default=ROOT,
                     help="run the servers from this source tree (default: this one)")
    args = cli.parse_args()
    if args.quick:
        args.clients, args.messages, args.probes = 30, 300, 50
    if shutil.which("redis-server") is None:
        print("redis-server is not installed (apt-get install redis-server)", file=sys.stderr)
        return 2
    log_dir = Path(tempfile.mkdtemp(prefix="nane-bench-"))
    print(f"servers from {args.source}")
    print(f"{args.clients} clients ({args.senders} posting), {args.messages} messages, "
          f"{args.probes} latency probes; {os.cpu_count()} CPUs; logs in {log_dir}")
    print(f"{'scenario':<22}{'delivered msg/s':>16}{'p50 ms':>9}{'p99 ms':>9}{'lost':>6}"
          f"{'script us':>11}")
    failed = False
    for processes, use_redis in [(1, False), (1, True), (2, True), (3, True)]:
        result = run(processes, use_redis, args, log_dir)
        failed = failed or result["lost"] > 0 or not result["complete"]
        name = f"{processes} process{'es' if processes > 1 else ''}, " + (
            "Redis" if use_redis else "in-memory")
        flag = "" if result["complete"] else "  (deadline hit)"
        print(f"{name:<22}{result['rate']:>16,.0f}{result['p50']:>9.2f}{result['p99']:>9.2f}"
              f"{result['lost']:>6}{result['script_us']:>11.1f}{flag}", flush=True)
    if failed:  # loss or a stalled run fails; timings never do
        print("FAILED: messages lost or a run did not complete", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
