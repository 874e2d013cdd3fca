"""Log lines cannot be forged (issue 22, item 4): every line is strict logfmt, whatever a client sends.

A small strict logfmt parser, written here apart from actors/logfmt.py so the
test does not trust the code it checks, reads every line a real server
printed after clients with hostile usernames and hostile `X-Forwarded-For`
headers came and went: each line parses, and has exactly one `level` and one
`event`.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import urllib.parse

import pytest

from actors import logfmt
from app.ops.limits import client_address
from app.websocket.codec import OP_CLOSE, OP_TEXT, close_payload
from tests.conftest import RECEIVE_TIMEOUT
from tests.ops_helpers import read_frames_until_end, wait_for
from tests.ports import upgrade
from tests.wsframes import client_frame, handshake_request

ALL_MODES = ["embedded", "gunicorn-geventwebsocket", "gunicorn-gevent"]
HOSTILE = [
    "mallory level=error event=admin_login",
    'quote" level=error',
    "back\\slash\\",
    "new\nline time=0 level=critical event=forged",
    "esc\x1b[2J\x1b[31mred",
    "nul\x00byte",
    "bel\x07",
    "nel\x85next",
    "rlo\u202eevil",
    "zwsp\u200b",
    "ls\u2028ps\u2029",
    "=",
]
HOSTILE_FORWARDED = ["1.2.3.4 level=error", "\x1b[31m", "\u0085", "not an address",
                     "fe80::1%eth0 level=error"]

# key=value or key="quoted \" value", fields one space apart; no raw control anywhere
STRICT_FIELD = re.compile(r'([A-Za-z_][A-Za-z0-9_.:-]*)=("(?:[^"\\\x00-\x1f\x7f-\x9f\u2028\u2029]|'
                          r'\\["\\nrtuU0-9a-f])*"|[^\s="\\\x00-\x1f\x7f-\x9f]+)')


def strict_fields(line: str) -> list[tuple[str, str]]:
    """The fields of one logfmt line; AssertionError when it is not strictly logfmt."""
    fields, at = [], 0
    while at < len(line):
        field = STRICT_FIELD.match(line, at)
        assert field is not None, f"not logfmt at {at}: {line!r}"
        fields.append((field[1], field[2]))
        at = field.end()
        if at < len(line):
            assert line[at] == " ", f"no space after a field at {at}: {line!r}"
            at += 1
    return fields


def check_every_line(log: str) -> int:
    lines = log.splitlines()
    for line in lines:
        keys = [key for key, _ in strict_fields(line)]
        assert keys.count("level") == 1 and keys.count("event") == 1, line
        assert len(set(keys)) == len(keys), line
    return len(lines)


def visit(port: int, username: str, forwarded: str) -> bool:
    """A websocket under `username`, through a "proxy" saying `forwarded`: a post, a bad frame, a close.

    False when the server refused the handshake (gunicorn refuses a control character in a
    header with 400): nothing to log then.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=RECEIVE_TIMEOUT) as sock:
        path = "/ws?username=" + urllib.parse.quote(username, safe="")
        sock.sendall(handshake_request(path, f"127.0.0.1:{port}", X_Forwarded_For=forwarded))
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                return False
            answer += chunk
        if not answer.startswith(b"HTTP/1.1 101"):
            return False
        sock.sendall(client_frame(OP_TEXT, json.dumps({"room": username, "text": "t"}).encode()))
        sock.sendall(client_frame(OP_TEXT, b"not json " + username.encode()))
        sock.sendall(client_frame(OP_CLOSE, close_payload(1000)))
        read_frames_until_end(sock, RECEIVE_TIMEOUT)
        return True


@pytest.mark.parametrize("mode", ALL_MODES)
def test_no_username_or_forwarded_address_forges_a_log_field(start_server, mode):
    server = start_server(mode)
    served = sum(visit(server.port, username, HOSTILE_FORWARDED[n % len(HOSTILE_FORWARDED)])
                 for n, username in enumerate(HOSTILE))
    assert served >= len(HOSTILE) // 2
    wait_for(lambda: server.log().count("event=ws_close") >= served, what="every close logged")
    # the last visitor's line comes after every other: nothing it wrote may hide among them
    with socket.create_connection(("127.0.0.1", server.port), timeout=RECEIVE_TIMEOUT) as sock:
        upgrade(sock, "/ws?username=last", f"127.0.0.1:{server.port}")
    log = server.log()
    assert check_every_line(log) > len(HOSTILE)
    assert "1.2.3.4" not in log and "not an address" not in log and "eth0" not in log
    assert "remote=127.0.0.1" in log


# -- without a network ---------------------------------------------------------------------

@pytest.mark.parametrize("text", HOSTILE + ["", "ann", "Петя", "a b"])
def test_every_value_reads_back_as_one_field(text):
    fields = strict_fields(f"event=x username={logfmt.value(text)} level=info")
    assert [key for key, _ in fields] == ["event", "username", "level"]


def test_a_message_that_is_not_clean_logfmt_goes_in_one_msg():
    formatter = logfmt.LogfmtFormatter()

    def line(message: str, *args) -> str:
        record = logging.LogRecord("lib", logging.INFO, __file__, 1, message, args, None)
        return formatter.format(record)

    for forged in ("event=ws_open username=%s", "Booting worker %s"):
        keys = [key for key, _ in strict_fields(line(forged, HOSTILE[0]))]
        assert keys == ["time", "level", "logger", "event", "msg"], keys
    assert line("event=ws_open username=%s", logfmt.value("a b")).endswith('event=ws_open username="a b"')


def test_a_forwarded_address_that_is_not_an_ip_is_refused():
    trusted = frozenset({"127.0.0.1"})
    environ = {"REMOTE_ADDR": "127.0.0.1"}
    for forwarded in HOSTILE_FORWARDED:
        assert client_address({**environ, "HTTP_X_FORWARDED_FOR": forwarded}, trusted) == "127.0.0.1"
    assert client_address({**environ, "HTTP_X_FORWARDED_FOR": "9.9.9.9, 2001:db8::1"}, trusted) \
        == "2001:db8::1"
