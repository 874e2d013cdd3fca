"""A private `redis-server` on a free loopback port, for the Redis tests and bench/redis_scale.py.

Never the shared one on 6379: each user gets its own server with persistence
off (`--save "" --appendonly no`), so nothing outlives it. No test tool in
here, so the benchmark can start one too; the tests' `redis_server` fixture
is in tests/conftest.py.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from pathlib import Path

from tests.ports import free_port

READY_TIMEOUT = 10.0
READY_LINE = b"Ready to accept connections"


class RedisServer:
    """One `redis-server` process on 127.0.0.1; `kill()` and `start()` again on the same port."""

    def __init__(self, binary: str, log_dir: Path, port: int | None = None):
        self.binary = binary
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = log_dir / f"redis-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        """Start (again) and return once it says it accepts connections."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes",
             "--loglevel", "notice"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        seen = b""
        deadline = time.monotonic() + READY_TIMEOUT
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while READY_LINE not in seen:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    raise RuntimeError(f"redis-server not ready in {READY_TIMEOUT}s:\n{seen!r}")
                chunk = os.read(self.process.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"redis-server exited:\n{seen.decode(errors='replace')}")
                seen += chunk
        with open(self.log_path, "ab") as log:
            log.write(seen)
        # keep draining its output into the log, so a full pipe never blocks it
        with open(self.log_path, "ab") as log:
            self._drain = subprocess.Popen(["cat"], stdin=self.process.stdout, stdout=log)
        self.process.stdout.close()

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-traffic, as a crash would make it."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
            self._drain.wait(5)

    def stop(self) -> None:
        self.kill()
