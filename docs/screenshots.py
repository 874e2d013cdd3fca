"""Retake the screenshots in docs/ from a real session: `python docs/screenshots.py`.

Starts a real server (with the bot) on a free loopback port, lets a few
browser users chat through the real page, and photographs the chat and the
actor view at phone and desktop width with Debian's chromium.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, expect, sync_api  # noqa: E402
from tests.conftest import Server  # noqa: E402
from tests.ports import free_port  # noqa: E402

CONVERSATION = [
    ("alice", "lobby", "Morning! Is the new server up?"),
    ("bob", "lobby", "Yes: same API, same websocket. My old Vue client just works."),
    ("alice", "lobby", "And it says when it reconnects. Try killing it ;)"),
    ("carol", "interviews", "Candidates: please compare your client with this one."),
    ("bob", "lobby", "Unread counts on the left, limits under each field."),
    ("carol", "interviews", "<img src=x onerror=alert(1)> shows up as text, as it should."),
]


def chatting(playwright, server: Server, path: str):
    """Debian's chromium, and alice, bob and carol logged in to the chat at `path`."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=CHROMIUM_ARGS)
    pages = {}
    for name in ("alice", "bob", "carol"):
        page = browser.new_context(viewport=DESKTOP).new_page()
        page.goto(server.base + path)
        page.fill("#username", name)
        page.click("#login-submit")
        expect(page.locator("#status")).to_have_attribute("data-state", "online")
        pages[name] = page
    return browser, pages


def main() -> None:
    out = ROOT / "docs"
    logs = tempfile.TemporaryDirectory()
    server = Server("embedded", free_port(),
                    {"kozma": 1, "kozma_first_delay": 0.5, "kozma_max_pause": 20}, Path(logs.name))
    try:
        with sync_api.sync_playwright() as playwright:
            browser, pages = chatting(playwright, server, "/")
            for name, room, text in CONVERSATION:
                page = pages[name]
                if page.locator("#room-title").text_content() != room:
                    page.fill("#new-room", room)
                    page.click("#new-room-submit")
                    expect(page.locator("#room-title")).to_have_text(room)
                page.fill("#text", text)
                page.press("#text", "Enter")
                expect(page.locator("#messages .msg:not(.pending) .text", has_text=text)).to_be_visible()
            bob = pages["bob"]
            expect(bob.locator("#rooms .room-item", has_text="kozma")).to_be_visible(timeout=15_000)
            bob.fill("#text", "Typing a reply…")
            bob.screenshot(path=str(out / "chat-desktop.png"))
            bob.set_viewport_size(PHONE)
            bob.screenshot(path=str(out / "chat-phone.png"))

            view = browser.new_context(viewport=DESKTOP).new_page()
            view.goto(server.base + "/actors")
            expect(view.locator("#sessions .card")).to_have_count(3)
            pages["alice"].fill("#text", "Watch this one travel through the actors!")
            pages["alice"].press("#text", "Enter")
            expect(view.locator('.card[data-actor="room:lobby"] .recent')).to_contain_text("travel")
            view.screenshot(path=str(out / "actors-desktop.png"), full_page=True)
            view.set_viewport_size(PHONE)
            view.screenshot(path=str(out / "actors-phone.png"))
            browser.close()
    finally:
        server.stop()
        logs.cleanup()


if __name__ == "__main__":
    main()
