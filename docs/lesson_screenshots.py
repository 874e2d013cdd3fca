"""Retake the screenshots of docs/lesson.md: `python docs/lesson_screenshots.py`.

Starts a real server with the fault controls on a free loopback port, lets
three browser users chat, and photographs /actors with Debian's chromium at
each step of the lesson: the controls, a crashed room, a slowed session whose
outbox fills, a room its supervisor gave up on.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from docs.screenshots import chatting  # noqa: E402
from tests.browser import expect, sync_api  # noqa: E402
from tests.conftest import Server  # noqa: E402
from tests.ports import free_port  # noqa: E402

TOKEN = "lesson"


def control(server: Server, name: str, **body) -> dict:
    status, _, raw = server.request(f"/api/controls/{name}", "POST", body=json.dumps(body).encode(),
                                    headers={"Authorization": f"Bearer {TOKEN}",
                                             "Content-Type": "application/json"})
    assert status == 200, raw
    return json.loads(raw)["result"]


def main() -> None:
    out = ROOT / "docs"
    logs = tempfile.TemporaryDirectory()
    server = Server("embedded", free_port(), {"controls": 1, "controls_token": TOKEN,
                                              "max_outbox_messages": 40}, Path(logs.name))
    try:
        with sync_api.sync_playwright() as playwright:
            browser, pages = chatting(playwright, server, "/#lobby")

            def say(name: str, text: str) -> None:
                pages[name].fill("#text", text)
                pages[name].press("#text", "Enter")
                expect(pages[name].locator("#messages .msg:not(.pending) .text",
                                           has_text=text)).to_be_visible()

            say("alice", "Good morning, class")
            say("bob", "Morning!")
            view = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
            view.goto(server.base + f"/actors#token={TOKEN}")
            expect(view.locator("#controls-bar")).to_be_visible()
            expect(view.locator("#sessions .card")).to_have_count(3)
            view.screenshot(path=str(out / "lesson-controls.png"), full_page=True)

            lobby = view.locator('.card[data-actor="room:lobby"]')
            lobby.locator('button[data-control="crash"]').click()
            expect(lobby.locator('.stat[data-stat="restarts"] dd')).to_have_text("1")
            say("carol", "Did something just happen?")
            expect(lobby.locator('.stat[data-stat="history"] dd')).to_have_text("3")
            lobby.screenshot(path=str(out / "lesson-crash.png"))

            carol = view.locator("#sessions .card").filter(
                has=view.locator(".card-title", has_text="carol"))
            view.fill("#fault-ms", "1000")
            carol.locator('button[data-control="slow"]').click()
            for n in range(12):
                say("alice", f"message {n} for everyone")
            expect(carol.locator(".fault-state")).to_contain_text("slowed")
            view.locator("#sessions").screenshot(path=str(out / "lesson-slow.png"))
            control(server, "slow", actor=carol.get_attribute("data-actor"), ms=0)

            lobby.locator('button[data-control="crash-until-give-up"]').click()
            expect(view.locator("#controls-status")).to_contain_text("done", timeout=20_000)
            expect(view.locator("#rooms-empty")).to_be_visible()
            view.screenshot(path=str(out / "lesson-gave-up.png"))
            browser.close()
    finally:
        server.stop()
        logs.cleanup()


if __name__ == "__main__":
    main()
