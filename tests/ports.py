"""Free loopback ports for the servers the tests and the benchmarks start.

Standard library only, so that bench/ (which does not install pytest) can
import it too: the one `free_port` of the repository.
"""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
