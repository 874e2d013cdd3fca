"""A browser whose message is too large hears why: its WebSocket's `close` event carries 1009.

The server must read and discard the rest of a refused message instead of
closing mid-write; otherwise the browser sees a reset and reports 1006.
Debian's chromium, driven by Playwright for Python, against a real server in
each run mode.
"""

from __future__ import annotations

import pytest

from tests.browser import browser, open_page  # noqa: F401
from tests.conftest import MODES

MiB = 1024 * 1024

SEND_TOO_LARGE = """async ([url, size]) => await new Promise((resolve) => {
    const ws = new WebSocket(url);
    const timer = setTimeout(() => resolve({code: -1, reason: "no close within 20 s"}), 20000);
    ws.onopen = () => ws.send(JSON.stringify({room: "r", text: "x".repeat(size)}));
    ws.onclose = (event) => { clearTimeout(timer); resolve({code: event.code, reason: event.reason}); };
})"""


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("size", [4 * MiB, 16 * MiB])
def test_a_too_large_message_closes_with_1009_in_the_browser(start_server, open_page, mode, size):
    server = start_server(mode)
    page = open_page()
    page.goto(server.base + "/healthz")  # a page of the server's own origin
    closed = page.evaluate(SEND_TOO_LARGE, [f"{server.ws_base}/ws?username=big", size])
    limit = server.get("/api/settings")["result"]["max_frame_bytes"]
    assert closed == {"code": 1009, "reason": f"message larger than {limit} bytes"}, closed
    assert page.errors == []
