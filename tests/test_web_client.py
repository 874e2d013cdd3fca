"""The chat client at `/`, in a real browser against a real server process.

Debian's chromium (never a downloaded one) driven by Playwright for Python.
Every wait is Playwright's auto-waiting `expect` with a timeout: no sleeps.
When a test fails, every page it opened is saved at phone and desktop width
into `test-artifacts/`.
"""

from __future__ import annotations

import json

from tests.browser import browser, expect, login, open_page, open_room, post  # noqa: F401
from tests.conftest import receive, send

XSS = "<img src=x onerror=alert(1)>"


def room_item(page, name: str):
    return page.locator("#rooms .room-item").filter(has=page.locator(".room-name", has_text=name))


def messages_with(page, text: str):
    return page.locator("#messages .msg .text", has_text=text)


def test_two_users_chat_in_a_room(start_server, open_page):
    server = start_server(max_message_length=500, max_room_title_length=40)
    alice, bob = open_page(), open_page()
    login(alice, server, "alice")
    login(bob, server, "bob")

    # The counters show the limits the server announced in /api/settings.
    expect(alice.locator("#text-counter")).to_have_text("0/500")
    expect(alice.locator("#new-room-counter")).to_have_text("0/40")

    open_room(alice, "lobby")  # a new name: the first post creates the room
    expect(alice.locator("#room-new")).to_be_visible()
    post(alice, "hello bob")

    # Bob never opened the room, yet hears of it, with its last message.
    expect(room_item(bob, "lobby")).to_contain_text("alice: hello bob")
    room_item(bob, "lobby").locator("button").click()
    expect(messages_with(bob, "hello bob")).to_have_count(1)
    post(bob, "hi alice")

    expect(messages_with(alice, "hi alice")).to_have_count(1)
    expect(alice.locator("#messages .msg")).to_have_count(2)
    expect(bob.locator("#messages .msg")).to_have_count(2)
    # Own messages are marked as such, and nothing is left waiting.
    expect(alice.locator("#messages .msg.mine .text")).to_have_text(["hello bob"])
    expect(alice.locator("#messages .pending")).to_have_count(0)

    # A reload keeps the name and the open room, and loads the history.
    alice.reload()
    expect(alice.locator("#status")).to_have_attribute("data-state", "online")
    expect(alice.locator("#me")).to_contain_text("alice")
    expect(alice.locator("#messages .msg .text")).to_have_text(["hello bob", "hi alice"])


def test_unread_counts_rise_in_rooms_not_open(server, open_page):
    alice, carol = open_page(), open_page()
    login(alice, server, "alice")
    login(carol, server, "carol")
    open_room(carol, "elsewhere")
    open_room(alice, "news")

    post(alice, "first")
    badge = room_item(carol, "news").locator(".badge")
    expect(badge).to_have_text("1")
    post(alice, "second")
    expect(badge).to_have_text("2")
    post(alice, "third")
    expect(badge).to_have_text("3")
    expect(carol).to_have_title("(3) \u2068elsewhere\u2069 · nane")  # the name bidi-isolated
    # The most recently active room comes first.
    open_room(alice, "sport")
    post(alice, "goal")
    expect(carol.locator("#rooms .room-name")).to_have_text(["sport", "news"])

    # Opening the room reads it: the badge goes, the messages are there.
    room_item(carol, "news").locator("button").click()
    expect(room_item(carol, "news").locator(".badge")).to_have_count(0)
    expect(carol.locator("#messages .msg .text")).to_have_text(["first", "second", "third"])
    # Alice sees no unread count for her own messages.
    expect(room_item(alice, "news").locator(".badge")).to_have_count(0)


def test_user_strings_render_as_text_and_run_no_script(server, open_page):
    attacker, victim = open_page(), open_page()
    login(attacker, server, XSS)
    login(victim, server, "victim")

    open_room(attacker, XSS)
    post(attacker, XSS)
    post(attacker, "<script>alert(2)</script><b>bold</b>")

    expect(room_item(victim, XSS)).to_contain_text(XSS)
    room_item(victim, XSS).locator("button").click()
    for page in (attacker, victim):
        expect(page.locator("#room-title")).to_have_text(XSS)
        expect(page.locator("#messages .msg .sender").first).to_have_text(XSS)
        expect(page.locator("#messages .msg .text")).to_have_text(
            [XSS, "<script>alert(2)</script><b>bold</b>"])
        # Had any of it been parsed as HTML, these elements would exist.
        expect(page.locator("img")).to_have_count(0)
        expect(page.locator("#messages b, #messages script, #rooms img")).to_have_count(0)
    assert attacker.dialogs == [] and victim.dialogs == []
    assert attacker.errors == [] and victim.errors == []


def test_reconnects_after_restart_and_delivers_unsent_once(start_server, open_page):
    server = start_server()
    alice, bob = open_page(), open_page()
    login(alice, server, "alice")
    login(bob, server, "bob")
    open_room(alice, "lobby")
    post(alice, "before the restart")
    open_room(bob, "lobby")
    expect(messages_with(bob, "before the restart")).to_have_count(1)

    server.stop()
    for page in (alice, bob):
        expect(page.locator("#status")).to_have_attribute("data-state", "reconnecting")
        expect(page.locator("#status")).to_contain_text("reconnecting")

    # Typed while the server is down: kept, shown as waiting, not lost.
    post(alice, "typed while down")
    expect(alice.locator("#messages .pending")).to_contain_text("typed while down")
    expect(alice.locator("#status")).to_contain_text("1 unsent")

    # A new process on the same port, with no memory of the old one. The pages
    # retry with backoff (at most 8 s apart), so allow them two rounds.
    server = start_server(port=server.port)
    for page in (alice, bob):
        expect(page.locator("#status")).to_have_attribute("data-state", "online", timeout=20_000)
    expect(messages_with(bob, "typed while down")).to_have_count(1)
    expect(alice.locator("#messages .pending")).to_have_count(0)
    expect(alice.locator("#status")).to_have_text("Connected")
    # the new process cannot replay what the old one held, and the page says so
    expect(alice.locator("#notice")).to_contain_text("another server run")

    # A message sent after it arrives behind it, so any duplicate would be here by now.
    post(bob, "after the restart")
    for page in (alice, bob):
        expect(messages_with(page, "after the restart")).to_have_count(1)
        expect(page.locator("#messages .msg .text")).to_have_text(
            ["typed while down", "after the restart"])
    texts = [m["text"] for m in server.get("/api/rooms/lobby/history")["result"]]
    assert texts == ["typed while down", "after the restart"]


def test_recovers_across_a_server_side_disconnect_without_reading_histories(server, open_page):
    """The page resumes with `since`: what it missed arrives by replay, not by HTTP."""
    alice = open_page()
    sockets, from_server = [], []

    def route(page_side):  # the real socket, with a handle to cut it as the server would
        server_side = page_side.connect_to_server()
        server_side.on_message(lambda m: (from_server.append(m), page_side.send(m)))
        sockets.append((page_side, server_side))

    alice.route_web_socket("**/ws?*", route)
    login(alice, server, "alice")
    open_room(alice, "lobby")
    post(alice, "before the cut")
    # its echo, not the page's own pending copy: only the echo moves the page's position
    expect(alice.locator("#messages .msg:not(.pending) .text", has_text="before the cut")
           ).to_have_count(1)

    requests = []
    alice.on("request", lambda request: requests.append(request.url))
    page_side, server_side = sockets[-1]
    page_side.close(code=1012, reason="service restart")
    bob = server.connect("bob")
    for room, text in (("lobby", "missed one"), ("elsewhere", "missed two")):
        send(bob, room=room, text=text)
        receive(bob)
    expect(alice.locator("#status")).to_have_attribute("data-state", "online")
    expect(alice.locator("#messages .msg .text")).to_have_text(["before the cut", "missed one"])
    expect(room_item(alice, "elsewhere")).to_contain_text("bob: missed two")
    assert len(sockets) == 2
    assert [url for url in requests if "/api/" in url] == []  # not one history read
    replayed = [json.loads(m) for m in from_server if '"replayed"' in m]
    assert replayed[-1]["replayed"] == 2
    expect(alice.locator("#notice")).to_be_hidden()
