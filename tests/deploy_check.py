"""Proof that a fresh clone deploys as the README says: the Procfile's `web:` line, run from a
virtualenv that has `requirements.txt` and nothing else, serves a websocket chat.

Usage (what .ci/run does): python3 -m tests.deploy_check VENV

The server runs on the venv's Python (the `gunicorn` first on PATH is the venv's),
with `PORT` and `WEB_CONCURRENCY=3` as a platform sets them and no other variable
of ours; this process, the outer Python, is the client and talks to 127.0.0.1
only. Every wait is bounded; the server is stopped by its PID whatever happens.
Exit code 0 when it chats, 1 with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import websocket

from tests.conftest import ROOT, receive, send
from tests.ports import free_port

START_SECONDS = 60.0  # a cold start on a busy 2-core machine


def web_command(procfile: Path) -> str:
    """The command of the Procfile's `web:` process, as a platform reads it."""
    for line in procfile.read_text().splitlines():
        kind, sep, command = line.partition(":")
        if sep and kind.strip() == "web":
            return command.strip()
    raise SystemExit(f"deploy check: no web: line in {procfile}")


def wait_until_serving(base: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the web: process exited with {server.returncode}:\n"
                                 + log.read_text(errors="replace"))
        try:
            with urllib.request.urlopen(base + "/api/settings", timeout=1) as answer:
                json.load(answer)
                return
        except OSError:
            time.sleep(0.1)  # the port is not open yet: nothing to await but the next try
    raise AssertionError(f"nothing served {base} within {START_SECONDS}s:\n"
                         + log.read_text(errors="replace"))


def chat(port: int) -> None:
    """Two clients: what one sends, both receive, and the room is listed."""
    url = f"ws://127.0.0.1:{port}/ws?username="
    ann = websocket.create_connection(url + "ann", timeout=10)
    bob = websocket.create_connection(url + "bob", timeout=10)
    try:
        send(ann, room="deploy", text="hello from a fresh venv", id="m1")
        for client in (ann, bob):
            message = receive(client, 10)
            assert (message["text"], message["id"], message["sender"]) == (
                "hello from a fresh venv", "m1", {"username": "ann"}), message
    finally:
        ann.close()
        bob.close()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/rooms", timeout=10) as answer:
        assert [room["name"] for room in json.load(answer)["result"]] == ["deploy"]


def main(venv: Path) -> int:
    port = free_port()
    command = web_command(ROOT / "Procfile")
    environ = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PORT": str(port),
               "WEB_CONCURRENCY": "3", "HOME": os.environ.get("HOME", "/tmp"),
               "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "web.log"
        with open(log, "wb") as output:
            server = subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=environ,
                                      stdout=output, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        try:
            wait_until_serving(f"http://127.0.0.1:{port}", server, log)
            chat(port)
            text = log.read_text(errors="replace")
            assert f"Listening at: http://0.0.0.0:{port}" in text, "PORT did not set the address"
            workers = text.count("Booting worker")
            assert workers == 1, f"{workers} workers: rooms in memory need exactly one"
            assert "Traceback" not in text and "level=error" not in text, text
        except AssertionError as failure:
            print(f"deploy check FAILED: {failure}", file=sys.stderr)
            return 1
        finally:
            stop(server)
    print(f"deploy check: `{command}` from a venv with requirements.txt alone served a chat "
          f"on PORT={port} with WEB_CONCURRENCY=3")
    return 0


def stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (its PID), SIGKILL if it lingers."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(5)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    sys.exit(main(Path(sys.argv[1]).resolve()))
