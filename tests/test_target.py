"""Raw UTF-8 in the request target (issue 22, item 1): read as the original Go server reads it.

Non-browser clients send `/ws?username=Петя` with the UTF-8 bytes raw. The
expected bytes below were captured from the original (tada-team/nane, built
with Go 1.19 and run on 127.0.0.1), answering the same raw requests; our
server must send the same username bytes in every run mode, on Redis too.
"""

from __future__ import annotations

import json
import socket

import pytest

from app.target import escape_raw_bytes, query_values, text
from app.websocket.codec import OP_TEXT
from tests.conftest import RECEIVE_TIMEOUT
from tests.wsframes import FrameParser, client_frame, handshake_request

ALL_MODES = ["embedded", "gunicorn-geventwebsocket", "gunicorn-gevent"]
PETYA = "Петя".encode()  # D0 9F D0 B5 D1 82 D1 8F
ROOM = "Роом".encode()  # D0 A0 ...: 0xA0 is whitespace to str.split() in Latin-1

# Captured from the original: the echo of {"room":"r","text":"t"} sent on a websocket opened
# with this raw request target, from `"sender"` to the end of the username.
ORIGINAL_SENDER = {
    b"/ws?username=" + PETYA: b'"sender":{"username":"\xd0\x9f\xd0\xb5\xd1\x82\xd1\x8f"}',
    b"/ws?name=" + PETYA: b'"sender":{"username":"\xd0\x9f\xd0\xb5\xd1\x82\xd1\x8f"}',
    b"/ws?username=%D0%9F\xd0\xb5%D1%82\xd1\x8f": b'"sender":{"username":"\xd0\x9f\xd0\xb5\xd1\x82\xd1\x8f"}',
    b"/ws?username=\xd0%9F": b'"sender":{"username":"\xd0\x9f"}',
    b"/ws?username=+\xd0\x9f+": b'"sender":{"username":"\xd0\x9f"}',
    b"/ws?username=%E2%80%AEevil\xe2\x80\x8b": b'"sender":{"username":"\xe2\x80\xaeevil\xe2\x80\x8b"}',
    b"/ws?username=a%zzb&name=fallback": b'"sender":{"username":"fallback"}',
}
# Bytes that are not UTF-8: the original replaces each byte with U+FFFD and spells it `\ufffd`;
# we send the character itself (app/target.py), so these compare as JSON values.
ORIGINAL_INVALID = {
    b"/ws?username=a\xff\xfeb": b'{"username":"a\\ufffd\\ufffdb"}',
    b"/ws?username=a\xe2\x82b": b'{"username":"a\\ufffd\\ufffdb"}',
    b"/ws?username=a%E2%82b": b'{"username":"a\\ufffd\\ufffdb"}',
    b"/ws?username=\xed\xa0\x80x": b'{"username":"\\ufffd\\ufffd\\ufffdx"}',
}
# /api/rooms/{name} for a room nobody wrote to: the original's 404 bodies (without its newline).
ORIGINAL_NOT_FOUND = {
    b"/api/rooms/" + PETYA: b'{"error":"room \xd0\x9f\xd0\xb5\xd1\x82\xd1\x8f not found"}',
    b"/api/rooms/%D0%9F\xd0\xb5": b'{"error":"room \xd0\x9f\xd0\xb5 not found"}',
    b"/api/rooms/" + ROOM + b"/history": b'{"error":"room \xd0\xa0\xd0\xbe\xd0\xbe\xd0\xbc not found"}',
    b"/api/rooms/a\xe2\x82b": b'{"error":"room a\\ufffd\\ufffdb not found"}',
}


def echo_of(port: int, target: bytes, room: str = "r") -> bytes:
    """Open a websocket on the raw `target`, post one message, return the echo's JSON bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=RECEIVE_TIMEOUT) as sock:
        sock.sendall(handshake_request("/X").replace(b" /X ", b" " + target + b" ", 1))
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            assert chunk, f"closed during the handshake: {answer!r}"
            answer += chunk
        head, _, rest = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), (target, head)
        sock.sendall(client_frame(OP_TEXT, json.dumps({"room": room, "text": "t"}).encode()))
        parser = FrameParser()
        frames = parser.feed(rest)
        while not frames:
            chunk = sock.recv(65536)
            assert chunk, "closed before the echo"
            frames = parser.feed(chunk)
        _, opcode, payload = frames[0]
        assert opcode == OP_TEXT
        return payload


def http_of(port: int, target: bytes) -> tuple[bytes, bytes]:
    """(status line, body) of a GET on the raw `target`."""
    with socket.create_connection(("127.0.0.1", port), timeout=RECEIVE_TIMEOUT) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], body


def sender_bytes(echo: bytes) -> bytes:
    return echo[echo.index(b'"sender":'):echo.index(b"}", echo.index(b'"sender":')) + 1]


def check_every_target(port: int) -> None:
    for target, expected in ORIGINAL_SENDER.items():
        assert sender_bytes(echo_of(port, target)) == expected, target
    for target, expected in ORIGINAL_INVALID.items():
        sender = json.loads(sender_bytes(echo_of(port, target)).removeprefix(b'"sender":'))
        assert sender == json.loads(expected), target
    for target, expected in ORIGINAL_NOT_FOUND.items():
        status, body = http_of(port, target)
        assert status.startswith(b"HTTP/1.1 404") and json.loads(body) == json.loads(expected), \
            (target, status, body)
    # a room with a raw UTF-8 name is found through its raw path, its history too
    echo_of(port, b"/ws?username=" + PETYA, room=ROOM.decode())
    for target in (b"/api/rooms/" + ROOM, b"/api/rooms/" + ROOM + b"/history"):
        status, body = http_of(port, target)
        assert status.startswith(b"HTTP/1.1 200") and ROOM in body, (target, status, body)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_raw_utf8_in_the_target_reads_as_the_original_reads_it(start_server, mode):
    check_every_target(start_server(mode).port)


def test_raw_utf8_username_on_redis_is_the_originals_bytes(start_server, redis_server):
    check_every_target(start_server("embedded", redis_url=redis_server.url).port)


# -- without a network ---------------------------------------------------------------------

def test_query_values_follow_gos_parse_query():
    assert query_values(b"username=%D0%9F\xd0\xb5&v=2&since=") == {
        "username": "Пе", "v": "2", "since": ""}
    assert query_values(b"username=a+b&username=second") == {"username": "a b"}
    assert query_values(b"username=a%zz&name=n") == {"name": "n"}  # Go skips the malformed pair
    assert query_values(b"username=a\xe2\x82b") == {"username": "a\ufffd\ufffdb"}  # one per byte


def test_the_request_line_is_escaped_so_every_server_parses_it():
    line = b"GET /ws?username=\xd0\xa0\xd1\x85 HTTP/1.1\r\n"
    assert escape_raw_bytes(line) == b"GET /ws?username=%D0%A0%D1%85 HTTP/1.1\r\n"
    assert text("/api/rooms/\xd0\x9f\xff") == "/api/rooms/П\ufffd"
