"""Free loopback ports for the servers the tests and the benchmarks start, and the handshake.

No test tool in it, so that bench/ (which does not install pytest) can
import it too: the one `free_port` and the one blocking `upgrade` of the
repository.
"""

from __future__ import annotations

import socket

from tests.wsframes import handshake_answer, handshake_request


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def upgrade(sock: socket.socket, path: str, host: str = "127.0.0.1") -> bytes:
    """The websocket handshake on a connected blocking socket; the bytes that came after the answer.

    Bounded by the socket's timeout. Raises ConnectionError when the server
    closes or refuses (tests/wsframes.py builds and checks the handshake).
    """
    sock.sendall(handshake_request(path, host))
    answer = b""
    while (parsed := handshake_answer(answer)) is None:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed during handshake: {answer!r}")
        answer += chunk
    return parsed[1]
