"""Fixtures that start REAL server processes on loopback ports, and real websocket clients.

`start_server(mode, **settings)` runs nane in one of its three run modes with
its settings in `NANE_<KEY>` environment variables (what a Procfile deploy
uses), waits until it answers HTTP, and stops it after the test. Every receive
has a timeout, so a hang fails fast.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import websocket

from tests.ports import free_port
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
RECEIVE_TIMEOUT = 5.0
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"]
MODES = {
    "embedded": lambda port: [sys.executable, "-m", "app", "--addr", f"127.0.0.1:{port}"],
    "gunicorn-geventwebsocket": lambda port: GUNICORN + [
        "-k", "geventwebsocket.gunicorn.workers.GeventWebSocketWorker",
        "-b", f"127.0.0.1:{port}", "app.wsgi:app"],
    "gunicorn-gevent": lambda port: GUNICORN + ["-k", "gevent", "-b", f"127.0.0.1:{port}",
                                                "app.wsgi:app"],
}


class Server:
    """One nane process: its URLs, its log, and how to stop it."""

    def __init__(self, mode: str, port: int, settings: dict, log_dir: Path, env: dict | None = None,
                 command=None):
        self.mode = mode
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.ws_base = f"ws://127.0.0.1:{port}"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("NANE_")}
        environ.pop("PORT", None)
        environ.pop("REDIS_URL", None)  # a platform's Redis must not leak into a test server
        environ.update({f"NANE_{k.upper()}": str(v) for k, v in settings.items()})
        environ.update(env or {})
        environ["PYTHONUNBUFFERED"] = "1"
        self.log_path = log_dir / f"{mode}-{port}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen((command or MODES[mode])(port), cwd=ROOT, env=environ,
                                        stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self.wait_ready()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n"
                                   f"{self.log()[-5000:]}")
            try:
                self.get("/api/settings", timeout=1)
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)  # polling a port that is not open yet: nothing to await
        raise RuntimeError(f"server did not answer within {timeout}s:\n{self.log()[-5000:]}")

    def request(self, path: str, method: str = "GET", timeout: float = RECEIVE_TIMEOUT,
                headers: dict | None = None, body: bytes | None = None):
        """(status, headers, body bytes); HTTP errors are answers, not exceptions."""
        req = urllib.request.Request(self.base + path, method=method, headers=headers or {},
                                     data=body)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def get(self, path: str, method: str = "GET", timeout: float = RECEIVE_TIMEOUT):
        """The JSON body of a successful request."""
        status, _, body = self.request(path, method, timeout)
        assert status == 200, (status, body)
        return json.loads(body)

    def connect(self, username: str | None = "tester", query: str = "", **options):
        """A websocket client; `query` is appended raw (e.g. "v=2")."""
        params = [] if username is None else [f"username={username}"]
        if query:
            params.append(query)
        url = f"{self.ws_base}/ws?{'&'.join(params)}"
        return websocket.create_connection(url, timeout=RECEIVE_TIMEOUT, **options)

    def log(self) -> str:
        """The whole log so far (a "no traceback" check must see all of it)."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()
        return self.process.returncode


@pytest.fixture
def start_server(tmp_path):
    """Factory: `start_server(mode="embedded", **settings)`; all are stopped after the test."""
    servers = []

    def start(mode: str = "embedded", port: int | None = None, env: dict | None = None,
              command=None, **settings) -> Server:
        """`command(port)`, when given, is the argv to run instead of the mode's."""
        server = Server(mode, port or free_port(), settings, tmp_path, env, command)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server) -> Server:
    """A fresh embedded server with default settings."""
    return start_server()


def send(ws, **frame) -> None:
    ws.send(json.dumps(frame))


def receive(ws, timeout: float = RECEIVE_TIMEOUT) -> dict:
    """The next JSON frame; fails the test after `timeout` seconds."""
    ws.settimeout(timeout)
    return json.loads(ws.recv())


def receive_close(ws, timeout: float = RECEIVE_TIMEOUT) -> tuple[int, str]:
    """Read until the server's close frame; (code, reason).

    Raw frames: websocket-client would answer the close itself, and that write
    fails when the server has already dropped the socket.
    """
    ws.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = ws.recv_frame()
        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            data = frame.data
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
            return code, data[2:].decode(errors="replace")
    raise AssertionError("no close frame")


def pytest_terminal_summary(terminalreporter):
    """The figures the operations tests measured (connections, messages, bad inputs, losses)."""
    from tests.ops_helpers import FIGURES

    if not FIGURES:
        return
    terminalreporter.section("nane operations figures")
    for test, values in FIGURES.items():
        shown = ", ".join(f"{key}={value:,}" if isinstance(value, int) else f"{key}={value}"
                          for key, value in values.items())
        terminalreporter.write_line(f"{test}: {shown}")


def redis_binary() -> str:
    """The path of `redis-server`, or skip (fail when NANE_REQUIRE_REDIS=1)."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not installed (apt-get install redis-server; .ci/run does)"
        if os.environ.get("NANE_REQUIRE_REDIS") == "1":
            pytest.fail(f"NANE_REQUIRE_REDIS=1 but {reason}")
        pytest.skip(reason)
    return binary


@pytest.fixture
def redis_server(tmp_path) -> RedisServer:
    """A fresh private redis-server for this test, killed after it."""
    server = RedisServer(redis_binary(), tmp_path)
    yield server
    server.stop()
