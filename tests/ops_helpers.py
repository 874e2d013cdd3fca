"""Helpers for the operations tests: metrics scraping, raw sockets, and the figures report.

`FIGURES` collects what the ops tests measured; the terminal-summary hook in
conftest.py prints it at the end of the run.
"""

from __future__ import annotations

import socket
import time
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

from app.websocket.codec import OP_CLOSE, parse_close
from tests.ports import upgrade
from tests.wsframes import FrameParser

FIGURES: dict[str, dict[str, object]] = defaultdict(dict)


def figure(test: str, **values) -> None:
    """Record figures of one test for the end-of-run report."""
    FIGURES[test].update(values)


def scrape(server) -> dict[tuple, float]:
    """Every sample of /metrics, keyed by (name, sorted label items)."""
    status, _, body = server.request("/metrics")
    assert status == 200, body
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(server, name: str, **labels) -> float:
    return scrape(server).get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(condition, timeout: float = 10.0, what: str = "condition"):
    """Poll `condition` (an observable state of another process) until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def raw_upgrade(port: int, username: str = "raw", timeout: float = 5.0,
                receive_buffer: int = 0, source: str = "") -> socket.socket:
    """A websocket handshake by hand: a client that then does exactly what the test says.

    `receive_buffer` shrinks the socket's receive buffer before it connects, so
    the TCP window stays small (a client that reads slowly fills up fast).
    `source` is the address to connect from: all of 127.0.0.0/8 is loopback, so
    127.0.0.2 is a second client address on the same machine.
    """
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    if source:
        sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    upgrade(sock, f"/ws?username={username}", f"127.0.0.1:{port}")
    return sock


def read_frames_until_end(sock: socket.socket, timeout: float) -> tuple[list[int], int | None]:
    """Read server frames until the connection ends: (opcodes seen, close code or None)."""
    sock.settimeout(timeout)
    parser, opcodes, code = FrameParser(), [], None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return opcodes, code
        if not chunk:
            return opcodes, code
        for _, opcode, payload in parser.feed(chunk):
            opcodes.append(opcode)
            if opcode == OP_CLOSE and payload:
                code = parse_close(payload)[0]
    raise AssertionError(f"the connection did not end within {timeout}s (frames {opcodes})")
