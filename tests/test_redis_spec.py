"""The whole Part 3 suite of docs/protocol.md again, against a server whose rooms live in Redis.

Every test of tests/test_spec.py runs here unchanged, with `start_server`
(and so `server`) pointed at a private redis-server: the shared-rooms path
must keep the wire contract byte for byte, like the in-memory one. So do the
run modes and the 200-client load test of tests/test_server.py (each sender's
messages in the order sent, across rooms).
"""

from __future__ import annotations

import pytest

from tests.test_server import (  # noqa: F401
    test_200_clients_20_messages_10_rooms_everything_exactly_once_in_order,
    test_a_client_that_stops_reading_is_cut_off_and_nobody_else_notices,
    test_each_run_mode_serves_the_protocol,
)
from tests.test_spec import *  # noqa: F401,F403  (the tests themselves)


@pytest.fixture
def start_server(start_server, redis_server):  # noqa: F811
    """conftest's factory, with NANE_REDIS_URL set for every server it starts."""
    def start(mode: str = "embedded", port: int | None = None, env: dict | None = None,
              **settings):
        settings.setdefault("redis_url", redis_server.url)
        return start_server(mode, port, env, **settings)
    return start
