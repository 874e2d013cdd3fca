"""The fault controls in a real browser: the teacher's buttons, and the web client under every fault.

Debian's chromium driven by Playwright. `test_web_client_survives` is the
automated form of docs/testing-clients.md: for each fault listed there, two
chat tabs keep talking, nothing typed is lost, nothing arrives twice.
"""

from __future__ import annotations

import re

import pytest

from tests.browser import browser, expect, login, open_page, open_room, post  # noqa: F401
from tests.ops_helpers import metric
from tests.test_controls import TOKEN, ok, session_of

RECOVER_MS = 40_000  # a silent server is found by the client's own ping (10 s + 5 s), then backoff


def card(page, actor: str):
    return page.locator(f'.card[data-actor="{actor}"]')


def stat(page, actor: str, name: str):
    return card(page, actor).locator(f'.stat[data-stat="{name}"] dd')


def texts(page):
    return page.locator("#messages .msg:not(.pending) .text")


def two_tabs_in_lobby(server, open_page):
    alice, bob = open_page(), open_page()
    login(alice, server, "alice")
    login(bob, server, "bob")
    open_room(alice, "lobby")
    open_room(bob, "lobby")
    return alice, bob


def talk(alice, bob, *lines: str) -> None:
    """Alice says each line; both tabs show it exactly once, with nothing left pending."""
    for line in lines:
        post(alice, line)
    for page in (alice, bob):
        for line in lines:
            expect(texts(page).filter(has_text=line)).to_have_count(1, timeout=RECOVER_MS)
    expect(alice.locator("#messages .pending")).to_have_count(0, timeout=RECOVER_MS)


def test_no_buttons_without_the_flag(server, open_page):
    alice = open_page()
    login(alice, server, "alice")
    view = open_page()
    view.goto(server.base + "/actors#token=anything")
    expect(view.locator("#live")).to_have_attribute("data-state", "online")
    expect(view.locator("#sessions .card")).to_have_count(1)
    expect(view.locator(".faults button")).to_have_count(0)
    expect(view.locator("#controls-bar")).to_be_hidden()
    expect(view.locator("#controls-login")).to_be_hidden()


def test_a_wrong_token_gets_no_buttons_until_the_right_one(start_server, open_page):
    server = start_server(controls=1, controls_token=TOKEN)
    view = open_page()
    view.goto(server.base + "/actors#token=wrong")
    expect(view.locator("#controls-login")).to_be_visible()
    expect(view.locator(".faults button")).to_have_count(0)
    view.fill("#controls-token", TOKEN)
    view.click("#controls-login button")
    expect(view.locator("#controls-bar")).to_be_visible()
    expect(card(view, "hub").locator('button[data-control="delay"]')).to_be_visible()
    assert "token" not in view.url


def test_teacher_crashes_a_room_while_two_tabs_talk(start_server, open_page):
    server = start_server(controls=1, controls_token=TOKEN)
    alice, bob = two_tabs_in_lobby(server, open_page)
    talk(alice, bob, "before the crash")
    view = open_page()
    view.goto(server.base + f"/actors#token={TOKEN}")
    expect(stat(view, "room:lobby", "restarts")).to_have_text("0")

    card(view, "room:lobby").locator('button[data-control="crash"]').click()
    expect(stat(view, "room:lobby", "restarts")).to_have_text("1")
    expect(card(view, "room:lobby").locator(".fault-state")).to_contain_text("last control: crash")
    expect(view.locator("#controls-status")).to_contain_text("done")

    talk(alice, bob, "after the crash")
    post(bob, "bob too")
    expect(texts(alice).filter(has_text="bob too")).to_have_count(1)
    # The history is whole: the restarted room kept it.
    expect(stat(view, "room:lobby", "history")).to_have_text("3")
    alice.reload()
    expect(texts(alice)).to_have_text(["before the crash", "after the crash", "bob too"])
    assert view.errors == [] and view.dialogs == []


def test_teacher_drops_a_tabs_session_and_the_tab_recovers(start_server, open_page):
    server = start_server(controls=1, controls_token=TOKEN)
    alice, bob = two_tabs_in_lobby(server, open_page)
    view = open_page()
    view.goto(server.base + f"/actors#token={TOKEN}")
    session = session_of(server, "bob")
    bob_card = card(view, session)
    bob_card.locator("select").select_option("drop")
    bob_card.locator('button[data-control="disconnect"]').click()
    expect(bob.locator("#status")).to_have_attribute("data-state", "reconnecting")
    expect(bob.locator("#status")).to_have_attribute("data-state", "online", timeout=RECOVER_MS)
    expect(bob_card).to_have_count(0)  # the dropped session's card went away
    talk(alice, bob, "you are back")
    post(bob, "I am")
    expect(texts(alice).filter(has_text="I am")).to_have_count(1)


# -- the web client against every fault of docs/testing-clients.md ----------------

def _session(server, username):
    return session_of(server, username)


FAULTS = {
    "crash-room": lambda s: ok(s, "crash", actor="room:lobby"),
    "crash-room-until-give-up": lambda s: ok(s, "crash-until-give-up", actor="room:lobby"),
    "crash-session": lambda s: ok(s, "crash", actor=_session(s, "bob")),
    "crash-hub": lambda s: ok(s, "crash", actor="hub"),
    "pause-resume-registry": lambda s: (ok(s, "pause", actor="registry"),
                                        ok(s, "resume", actor="registry")),
    "slow-session-cut-off": lambda s: ok(s, "slow", actor=_session(s, "bob"), ms=2000),
    "close-1000": lambda s: ok(s, "disconnect", actor=_session(s, "bob"), how="1000"),
    "close-1001": lambda s: ok(s, "disconnect", actor=_session(s, "bob"), how="1001"),
    "close-1011": lambda s: ok(s, "disconnect", actor=_session(s, "bob"), how="1011"),
    "drop-no-close-frame": lambda s: ok(s, "disconnect", actor=_session(s, "bob"), how="drop"),
    "silent": lambda s: ok(s, "disconnect", actor=_session(s, "bob"), how="silent", seconds=120),
    "forget-everything": lambda s: ok(s, "forget"),
    "delay-delivery": lambda s: ok(s, "delay", ms=1500),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_web_client_survives(start_server, open_page, fault):
    server = start_server(controls=1, controls_token=TOKEN, max_outbox_messages=8)
    alice, bob = two_tabs_in_lobby(server, open_page)
    talk(alice, bob, "before")
    FAULTS[fault](server)
    if fault == "slow-session-cut-off":  # fill bob's outbox: the hub cuts him off (1008)
        for n in range(12):
            post(alice, f"burst {n}")
    # Typed during (or right after) the fault: delivered once, to both, whatever happened.
    post(bob, "typed by bob")
    post(alice, "typed by alice")
    for page in (alice, bob):
        for line in ("typed by bob", "typed by alice"):
            expect(texts(page).filter(has_text=line)).to_have_count(1, timeout=RECOVER_MS)
    for page in (alice, bob):
        expect(page.locator("#messages .pending")).to_have_count(0, timeout=RECOVER_MS)
        expect(page.locator("#status")).to_have_attribute("data-state", "online",
                                                          timeout=RECOVER_MS)
    talk(alice, bob, "after")
    if fault == "slow-session-cut-off":
        assert metric(server, "nane_slow_consumer_disconnects_total") == 1
        ok(server, "slow", actor=_session(server, "bob"), ms=0)
        for n in range(12):  # bob caught up from /history after his reconnect
            expect(texts(bob).filter(has_text=re.compile(f"^burst {n}$"))).to_have_count(1)
    for page in (alice, bob):
        assert page.errors == [], page.errors
