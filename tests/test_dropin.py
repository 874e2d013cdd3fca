"""Drop-in, exactly (issue 9): every legal message fits, `ping` wins, /api/actors never
fails, the original's command line, and clear errors for bad addresses.

Real servers on loopback ports and real websocket clients, as everywhere else.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading

import pytest

from actors.chat.message import BadFrame, Limits, Ping, parse_frame
from tests.conftest import ROOT, receive, receive_close, send
from tests.ops_helpers import metric, raw_upgrade, wait_for

ALL_MODES = ["embedded", "gunicorn-geventwebsocket", "gunicorn-gevent"]
EMOJI = "\U0001F600"  # one character, 12 bytes as a JSON escape (a surrogate pair)


def escaped(text: str) -> str:
    """`text` as a JSON string with every character escaped: its longest spelling."""
    units = text.encode("utf-16-be")
    return '"' + "".join(f"\\u{int.from_bytes(units[i:i + 2], 'big'):04x}"
                         for i in range(0, len(units), 2)) + '"'


def longest_frame(settings: dict, room: str, text: str, id: str, size: int) -> str:
    """A message at every limit, keys escaped too, padded with whitespace to `size` bytes."""
    frame = "{" + ",".join(f"{escaped(key)}:{escaped(value)}" for key, value in
                           (("room", room), ("text", text), ("id", id))) + "}"
    assert len(frame) <= size, (len(frame), size)
    return frame[:-1] + " " * (size - len(frame)) + "}"


# -- 1. the frame limit follows from the other limits ---------------------------------------

@pytest.mark.parametrize("mode", ALL_MODES)
def test_a_message_at_every_limit_in_its_longest_json_spelling_fits(start_server, mode):
    server = start_server(mode, max_messages_per_second=1000)
    settings = server.get("/api/settings")["result"]
    assert settings["max_id_length"] == 128
    assert settings["max_frame_bytes"] == 12 * (10500 + 50 + 128) + 1024
    room = EMOJI * settings["max_room_title_length"]
    text = EMOJI * settings["max_message_length"]
    id = EMOJI * settings["max_id_length"]
    ws = server.connect("ann")
    ws.send(longest_frame(settings, room, text, id, settings["max_frame_bytes"]))
    message = receive(ws, 15)
    assert (message["room"], message["text"], message["id"]) == (room, text, id)
    # one byte more is over the limit: the limit is the formula, not more
    ws.send(longest_frame(settings, room, text, id, settings["max_frame_bytes"] + 1))
    assert receive_close(ws, 15)[0] == 1009


@pytest.mark.parametrize("flags, env, named", [
    (["--max-frame-bytes", "1000"], {}, "--max-frame-bytes=1000"),
    ([], {"NANE_MAX_FRAME_BYTES": "65536"}, "NANE_MAX_FRAME_BYTES=65536"),
    (["--max-frame-bytes", "70000", "--maxmessagelength", "10500"], {}, "--max-message-length"),
])
def test_a_frame_limit_too_small_for_the_limits_stops_the_server(flags, env, named):
    done = run_app(flags, env)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert named in lines[0]
    named_settings = lines[0].replace("-", "_").lower()
    assert "max_frame_bytes" in named_settings and "max_message_length" in named_settings


def test_the_frame_limit_follows_lower_limits_and_small_ones_that_fit_start(start_server):
    server = start_server(max_message_length=100, max_room_title_length=10, max_id_length=8)
    assert server.get("/api/settings")["result"]["max_frame_bytes"] == 12 * 118 + 1024
    fitting = start_server(max_message_length=100, max_room_title_length=10, max_id_length=8,
                           max_frame_bytes=12 * 118 + 1024)
    assert fitting.get("/api/settings")["result"]["max_frame_bytes"] == 2440


def test_an_id_over_max_id_length_is_dropped_with_a_clear_error(start_server):
    server = start_server(max_id_length=16)
    plain, v2 = server.connect("ann"), server.connect("bob", query="v=2")
    send(v2, room="r", text="too long an id", id="x" * 17)
    error = receive(v2)
    assert error == {"error": "id is longer than max_id_length (16 characters)", "id": "x" * 17}
    send(v2, room="r", text="fits", id="y" * 16)
    for ws in (plain, v2):  # the next frame is the sentinel: nothing was posted before it
        message = receive(ws)
        assert (message["text"], message["id"]) == ("fits", "y" * 16)
    assert metric(server, "nane_messages_dropped_total", reason="id_too_long") == 1
    assert "event=dropped" in server.log() and "max_id_length" in server.log()


# -- 2. `ping` wins ----------------------------------------------------------------------

@pytest.mark.parametrize("frame", [
    {"ping": True, "room": "r", "text": "posted?"},
    {"ping": True, "room": "", "text": ""},
    {"ping": True, "room": "r", "text": "t", "id": 5},
    {"ping": True, "text": None, "id": "x" * 1000},
])
def test_a_frame_whose_ping_is_true_gets_a_pong_and_is_never_posted(server, frame):
    ws, watcher = server.connect("ann", query="v=2"), server.connect("watcher")
    send(ws, **frame)
    assert receive(ws) == {"pong": True}
    send(ws, room="sentinel", text="next")
    for client in (ws, watcher):  # the sentinel is the next frame: nothing was posted
        assert receive(client)["text"] == "next"
    assert [room["name"] for room in server.get("/api/rooms")["result"]] == ["sentinel"]


@pytest.mark.parametrize("raw", ['{"ping": true, "room": "r", "text": "t"}',
                                 '{"ping": true, "room": "", "text": ""}',
                                 '{"ping": true, "id": 7, "room": null}'])
def test_parse_frame_ping_comes_first(raw):
    assert parse_frame(raw, Limits()) == Ping()


def test_parse_frame_id_limit_in_characters():
    limits = Limits(max_id_length=3)
    assert parse_frame('{"room": "r", "text": "t", "id": "\u00e9\u00e9\u00e9"}', limits).id == "ééé"
    with pytest.raises(BadFrame) as dropped:
        parse_frame('{"room": "r", "text": "t", "id": "abcd"}', limits)
    assert (dropped.value.kind, dropped.value.id) == ("id_too_long", "abcd")


# -- 3. /api/actors never answers 500 ------------------------------------------------------

@pytest.mark.parametrize("mode", ALL_MODES)
def test_api_actors_answers_while_sessions_are_being_cut_off(start_server, mode):
    """A session cut off for not answering pings stays in the hub until its reader ends
    (under `gunicorn -k gevent` long enough to be seen); meanwhile it shows `closed_with`
    as `{"code", "reason"}`, and /api/actors never fails."""
    server = start_server(mode, ping_interval_seconds=1, ping_timeout_seconds=1)
    answers, seen_closing, stop = [], [], threading.Event()

    def poll():
        while not stop.is_set():
            status, _, body = server.request("/api/actors")
            answers.append(status)
            if status == 200:
                seen_closing.extend(actor["closed_with"] for actor in
                                    json.loads(body)["result"]["actors"]
                                    if actor.get("closed_with"))

    pollers = [threading.Thread(target=poll, daemon=True) for _ in range(2)]
    for poller in pollers:
        poller.start()
    try:
        for _ in range(ROUNDS):
            silent = [raw_upgrade(server.port, f"silent{i}") for i in range(30)]  # never pong
            wait_for(lambda: not _session_listed(server, "silent"), 15, "the silent cut off")
            for sock in silent:
                sock.close()
    finally:
        stop.set()
        for poller in pollers:
            poller.join(10)
    assert answers and set(answers) == {200}, sorted(set(answers))
    assert all(closed == {"code": 1011, "reason": "ping timeout"} for closed in seen_closing)


ROUNDS = 3


def _session_listed(server, prefix: str) -> bool:
    return any(actor.get("username", "").startswith(prefix)
               for actor in server.get("/api/actors")["result"]["actors"])


# -- 4. the original's command line ----------------------------------------------------------

def test_the_originals_flags_are_accepted(start_server):
    server = start_server(command=lambda port: [
        sys.executable, "-m", "app", "-addr", f"127.0.0.1:{port}", "-kozma",
        "--maxmessagesinroom", "7", "-maxroomtitlelength=9", "--maxusernamelength", "11",
        "-maxmessagelength", "13"])
    settings = server.get("/api/settings")["result"]
    assert (settings["max_messages_in_room"], settings["max_room_title_length"],
            settings["max_username_length"], settings["max_message_length"]) == (7, 9, 11, 13)
    assert "kozma=True" in server.log()


# -- 5. bad addresses: one line, exit code 2 -------------------------------------------------

def run_app(flags: list[str], env: dict) -> subprocess.CompletedProcess:
    environ = {"PATH": "/usr/bin:/bin", **env}
    return subprocess.run([sys.executable, "-m", "app", *flags], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("env, named", [({"PORT": "abc"}, "PORT='abc'"),
                                        ({"PORT": "99999"}, "PORT='99999'"),
                                        ({"NANE_ADDR": "127.0.0.1:x"}, "NANE_ADDR")])
def test_a_bad_port_is_one_clear_line_and_exit_2(env, named):
    done = run_app([], env)
    assert done.returncode == 2 and named in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_port_in_use_is_one_clear_line_and_exit_2(server):
    done = run_app(["--addr", f"127.0.0.1:{server.port}"], {})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.strip() == (f"nane: cannot listen on 127.0.0.1:{server.port}: "
                                   "Address already in use")


def test_help_names_every_variable_once():
    done = run_app(["--help"], {})
    text = " ".join(done.stdout.split())
    assert text.count("NANE_ADDR") == 1 and "(default ;" not in text
    for variable in ("NANE_KOZMA", "NANE_DEBUG", "NANE_MAX_ID_LENGTH", "SENTRY_DSN"):
        assert variable in text, variable
    for flag in ("--sentrydsn", "--maxmessagesinroom", "-kozma"):
        assert flag in text, flag


# -- 5. a fresh clone has all it needs ------------------------------------------------------

def test_documents_link_only_inside_the_repository():
    for document in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", document.read_text()):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = (document.parent / target.split("#")[0]).resolve()
            assert path.is_relative_to(ROOT) and path.exists(), (document.name, target)


def test_the_python_we_test_is_pinned_for_platforms():
    pinned = (ROOT / ".python-version").read_text().strip()
    assert pinned == f"{sys.version_info.major}.{sys.version_info.minor}" == "3.11"
    requirements = (ROOT / "requirements.txt").read_text()
    assert "gunicorn[gevent]" in requirements  # its gevent workers import `packaging`
    assert "sentry-sdk[flask]" in requirements
