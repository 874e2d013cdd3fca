"""The actor view at `/actors` and its JSON, `/api/actors`, against a real server process."""

from __future__ import annotations

from tests.browser import browser, expect, login, open_page, open_room, post  # noqa: F401
from tests.conftest import receive, send


def card(page, actor: str):
    return page.locator(f'.card[data-actor="{actor}"]')


def stat(page, actor: str, name: str):
    return card(page, actor).locator(f'.stat[data-stat="{name}"] dd')


def test_view_shows_rooms_and_sessions_and_counters_move(server, open_page):
    alice, bob = open_page(), open_page()
    login(alice, server, "alice")
    login(bob, server, "bob")
    view = open_page()
    view.goto(server.base + "/actors")

    expect(view.locator("#live")).to_have_attribute("data-state", "online")
    expect(view.locator("#core .card-title")).to_have_text(["registry", "hub"])
    expect(view.locator("#sessions .card-title")).to_have_text(["alice", "bob"])
    expect(view.locator("#rooms-empty")).to_be_visible()
    for session in view.locator("#sessions .card").all():  # the page's position (since=)
        expect(session.locator('.stat[data-stat="sent"] dd')).to_have_text("1")

    open_room(alice, "lobby")
    post(alice, "first")
    expect(view.locator("#rooms .card-title")).to_have_text(["lobby"])
    expect(stat(view, "room:lobby", "handled")).to_have_text("1")
    expect(stat(view, "room:lobby", "history")).to_have_text("1")
    expect(stat(view, "room:lobby", "subscribers")).to_have_text("2")
    # The message passed through the room to both outboxes, and the view saw it go by.
    expect(card(view, "room:lobby").locator(".recent")).to_contain_text("first")
    for session in view.locator("#sessions .card").all():
        expect(session.locator('.stat[data-stat="sent"] dd')).to_have_text("2")
        expect(session.locator(".recent")).to_contain_text('"text":"first"')

    post(alice, "second")
    expect(stat(view, "room:lobby", "handled")).to_have_text("2")
    expect(stat(view, "room:lobby", "history")).to_have_text("2")
    for session in view.locator("#sessions .card").all():
        expect(session.locator('.stat[data-stat="sent"] dd')).to_have_text("3")

    # A closed connection's outbox goes away.
    bob.context.close()
    expect(view.locator("#sessions .card-title")).to_have_text(["alice"])
    expect(stat(view, "hub", "sessions")).to_have_text("1")
    assert view.errors == [] and view.dialogs == []


def test_api_actors_shape_and_no_tracing_until_someone_looks(server):
    ws = server.connect("carol")
    send(ws, room="quiet", text="nobody is watching")
    assert receive(ws)["text"] == "nobody is watching"

    view = server.get("/api/actors")["result"]
    assert view["tracing"] is True and view["trace_seconds"] > 0
    by_name = {actor["name"]: actor for actor in view["actors"]}
    assert {"registry", "hub", "room:quiet"} <= set(by_name)
    room = by_name["room:quiet"]
    assert room["kind"] == "room" and room["room"] == "quiet"
    assert room["handled"] == 1 and room["history"] == 1 and room["subscribers"] == 1
    # The message went by before anyone looked: nothing was traced.
    assert room["recent"] == []
    sessions = [a for a in view["actors"] if a["kind"] == "session"]
    assert [s["username"] for s in sessions] == ["carol"]
    for actor in view["actors"]:
        for key in ("mailbox", "handled", "restarts", "failures"):
            assert isinstance(actor[key], int), (actor["name"], key)
        assert isinstance(actor["alive"], bool)
    assert sessions[0]["outbox"] == sessions[0]["mailbox"]
    assert sessions[0]["mailbox_limit"] == server.get("/api/settings")["result"]["max_outbox_messages"]

    # Now someone is looking: the next message is traced on its way.
    send(ws, room="quiet", text="now you see me")
    assert receive(ws)["text"] == "now you see me"
    by_name = {a["name"]: a for a in server.get("/api/actors")["result"]["actors"]}
    assert "now you see me" in by_name["room:quiet"]["recent"][-1]["message"]
    assert "now you see me" in by_name["registry"]["recent"][-1]["message"]
    assert "now you see me" in by_name["hub"]["recent"][-1]["message"]
    ws.close()


def test_a_big_server_lists_the_first_actors_of_each_kind_and_their_totals(start_server, open_page):
    """`max_actors_listed` bounds /api/actors (issue 22, item 6); the page says how many there are."""
    server = start_server(max_actors_listed=2)
    clients = [server.connect(f"user{i}") for i in range(3)]
    for n, room in enumerate(["old", "middle", "new"]):
        send(clients[0], room=room, text=f"message {n}")
        assert receive(clients[0])["room"] == room

    view = server.get("/api/actors")["result"]
    assert (view["rooms_total"], view["sessions_total"]) == (3, 3)
    listed = [(actor["kind"], actor.get("room") or actor.get("username"))
              for actor in view["actors"] if actor["kind"] in ("room", "session")]
    assert listed == [("room", "new"), ("room", "middle"), ("session", "user0"), ("session", "user1")]
    assert all(actor["subscribers"] == 3 for actor in view["actors"] if actor["kind"] == "room")

    page = open_page()
    page.goto(server.base + "/actors")
    expect(page.locator("#rooms .card-title")).to_have_text(["new", "middle"])
    expect(page.locator("#rooms-count")).to_have_text("(2 of 3: the most recently active)")
    expect(page.locator("#sessions-count")).to_have_text("(2 of 3: the oldest)")
    assert page.errors == [] and page.dialogs == []
