"""Names that spoof (issue 22, item 7): the same bytes on the wire as the original, drawn safely.

A room name and a username holding NUL, ESC, BEL, U+202E (right-to-left
override) and U+200B (zero-width space) reach clients exactly as the original
sends them; our pages (app/pages/static/names.js) show those characters as
visible symbols, each name in its own bidi isolate. Debian's chromium, driven
by Playwright, never a downloaded browser.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from tests.browser import browser, expect, login, open_page  # noqa: F401
from tests.conftest import ROOT, send

ROOM = "a\x00b\x1b[31m\x07\u202eevil\u200bx"
USERNAME = "mallory\u202e\x1b\x07\u200b"
ROOM_SHOWN = "a␀b␛[31m␇[U+202E]evil[U+200B]x"
USERNAME_SHOWN = "mallory[U+202E]␛␇[U+200B]"
# Captured from the original (tada-team/nane, Go 1.19, on 127.0.0.1): the echo of
# {"room": ROOM, "text": "t"} from a websocket opened as USERNAME, its room and sender fields.
ORIGINAL_ROOM = b'"room":"a\\u0000b\\u001b[31m\\u0007\xe2\x80\xaeevil\xe2\x80\x8bx"'
ORIGINAL_SENDER = b'"sender":{"username":"mallory\xe2\x80\xae\\u001b\\u0007\xe2\x80\x8b"}'
# what must never reach the page raw: controls, bidi controls, invisible characters
HIDDEN = r"/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b\u200e\u200f\u202a-\u202e\u2066-\u2069]/"


def post_as_mallory(server) -> bytes:
    ws = server.connect(urllib.parse.quote(USERNAME, safe=""))
    send(ws, room=ROOM, text="t")
    ws.settimeout(5)
    echo = ws.recv().encode()
    ws.close()
    return echo


def test_spoofing_names_keep_their_bytes_and_are_drawn_visibly_and_isolated(start_server, open_page):
    server = start_server()
    page = open_page()
    login(page, server, "watcher")
    echo = post_as_mallory(server)
    assert ORIGINAL_ROOM in echo and ORIGINAL_SENDER in echo, echo

    item = page.locator("#rooms .room-item")
    expect(item.locator(".room-name")).to_have_text(ROOM_SHOWN)
    expect(item.locator(".room-last-sender")).to_have_text(USERNAME_SHOWN + ": ")
    item.locator("button").click()
    expect(page.locator("#messages .msg .sender")).to_have_text([USERNAME_SHOWN])
    expect(page.locator("#room-title")).to_have_text(ROOM_SHOWN)
    # each name is its own bidi isolate, and nothing hidden reached the page's text
    for selector in ("#rooms .room-name", "#rooms .room-last-sender bdi", "#messages .sender",
                     "#room-title bdi"):
        assert page.locator(selector).first.evaluate("node => node.tagName") == "BDI", selector
    assert not page.evaluate(f"{HIDDEN}.test(document.body.innerText)")
    assert not page.evaluate(f"{HIDDEN}.test(document.title.replace(/[\\u2068\\u2069]/g, ''))")
    assert page.title().startswith("\u2068" + ROOM_SHOWN + "\u2069")
    assert page.dialogs == [] and page.errors == []


def test_the_actor_view_draws_spoofing_names_visibly(start_server, open_page):
    server = start_server()
    post_as_mallory(server)
    ws = server.connect(urllib.parse.quote(USERNAME, safe=""))  # an open session under the name
    view = open_page()
    view.goto(server.base + "/actors")
    expect(view.locator("#rooms .card-title")).to_have_text([ROOM_SHOWN])
    expect(view.locator("#sessions .card-title")).to_have_text([USERNAME_SHOWN])
    assert view.locator("#rooms .card-title").evaluate("node => node.tagName") == "BDI"
    assert not view.evaluate(f"{HIDDEN}.test(document.body.innerText)")
    assert view.dialogs == [] and view.errors == []
    ws.close()


def test_no_page_script_writes_html():
    for script in Path(ROOT, "app/pages/static").glob("*.js"):
        text = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
            assert sink not in text, f"{script.name} uses {sink}"
