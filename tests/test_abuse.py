"""One client can neither stall nor bloat the server: each attack of issue 10, reproduced.

Every test runs a real server on loopback, attacks it the way the issue
describes (bounded in count and time), and meanwhile a `Watch` probes a plain
bystander (its own message must come back) and `/healthz`, and samples the
server's resident memory. The assertions are liveness and bounded memory,
never speed: a probe must come back within `DEADLINE` (generous), RSS growth
must stay under the budget the README derives from the limits, and SIGTERM
must still end the process with 0 within its grace.

The slower variants are marked `slow` and run when NANE_SLOW_TESTS=1 (.ci/run sets it).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time

import psutil
import pytest
import websocket

from app.websocket.codec import (
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    close_payload,
    parse_close,
    server_frame,
)
from tests.conftest import MODES as RUN_MODES
from tests.conftest import receive, receive_close, send
from tests.ops_helpers import figure, metric, raw_upgrade, read_frames_until_end, wait_for
from tests.wsframes import FrameParser, client_frame, frame_header, handshake_request

ALL_MODES = ["embedded", "gunicorn-geventwebsocket", "gunicorn-gevent"]
DEADLINE = 10.0  # seconds a bystander's probe may take before the server counts as stalled
MiB = 1024 * 1024
slow = pytest.mark.skipif(os.environ.get("NANE_SLOW_TESTS") != "1",
                          reason="slow variant: NANE_SLOW_TESTS=1 runs it")
# gunicorn's GeventWebSocketWorker runs the embedded server's own handler and transport: its
# variant of the slower attacks runs with NANE_SLOW_TESTS=1, the other two always
MODES = ["embedded", pytest.param("gunicorn-geventwebsocket", marks=slow), "gunicorn-gevent"]
# where the attack only ever hurt `-k gevent` (simple-websocket's thread and buffer, before our own 101)
GEVENT_FIRST = [pytest.param("embedded", marks=slow),
                pytest.param("gunicorn-geventwebsocket", marks=slow), "gunicorn-gevent"]


def worker_process(server) -> psutil.Process:
    """The process that serves connections: the server itself, or gunicorn's one worker."""
    process = psutil.Process(server.process.pid)
    children = wait_for(lambda: process.children() or server.mode == "embedded",
                        what="the worker process")
    return children[0] if isinstance(children, list) else process


class Watch:
    """A bystander and /healthz probed while an attack runs; the worst latency and the RSS peak.

    Use as a context manager around the attack; the figures are recorded even
    when the test fails (they are the "before" column of the closing note).
    """

    def __init__(self, server, test: str, interval: float = 0.25, deadline: float = DEADLINE):
        self.server = server
        self.deadline = deadline
        self.test = test
        self.interval = interval
        self.worker = worker_process(server)
        self.bystander = server.connect("bystander")
        self.rss_start = self.rss_peak = self.worker.memory_info().rss
        self.worst = 0.0
        self.latencies: list[float] = []
        self.probes = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(DEADLINE * 2 + 5)
        median = sorted(self.latencies)[len(self.latencies) // 2] if self.latencies else 0.0
        figure(self.test, bystander_p50_ms=round(median * 1000),
               bystander_worst_ms=round(self.worst * 1000),
               probes=self.probes, failures=len(self.failures),
               rss_start_mb=round(self.rss_start / MiB, 1),
               rss_peak_mb=round(self.rss_peak / MiB, 1))

    @property
    def growth(self) -> int:
        return self.rss_peak - self.rss_start

    def sample(self) -> None:
        try:
            self.rss_peak = max(self.rss_peak, self.worker.memory_info().rss)
        except psutil.Error:
            pass

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            self.sample()
            started = time.monotonic()
            try:
                self._probe(f"probe-{n}")
                status, _, _ = self.server.request("/healthz", timeout=self.deadline)
                assert status == 200, status
            except Exception as error:  # a stalled or dead server: the test asserts on it
                self.failures.append(f"{type(error).__name__}: {error}"[:200])
                self.worst = max(self.worst, time.monotonic() - started)
                if len(self.failures) >= 2:
                    return
                continue
            self.probes += 1
            self.latencies.append(time.monotonic() - started)
            self.worst = max(self.worst, self.latencies[-1])
            self._stop.wait(self.interval)

    def _probe(self, probe_id: str) -> None:
        send(self.bystander, room="probe", text="are you there", id=probe_id)
        deadline = time.monotonic() + self.deadline
        while receive(self.bystander, timeout=max(deadline - time.monotonic(), 0.01)).get(
                "id") != probe_id:
            pass

    def assert_alive(self) -> None:
        """Stop watching; every probe came back, and one more does now."""
        self.stop()
        assert not self.failures, self.failures
        assert self.probes >= 1
        self._probe("final")


def stream(sock: socket.socket, chunk: bytes, seconds: float) -> threading.Thread:
    """Send `chunk` again and again for `seconds` (or until the server cuts us off)."""
    def run():
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                sock.sendall(chunk)
        except OSError:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def sigterm_exits_0(server, grace: float) -> None:
    started = time.monotonic()
    assert server.stop(timeout=grace + 5) == 0
    assert time.monotonic() - started < grace + 3


MASK = bytes(4)  # a zero mask: the payload goes as it is
EMPTY_PONG = client_frame(OP_PONG, mask=MASK)
EMPTY_PING = client_frame(OP_PING, mask=MASK)
EMPTY_PIECE = client_frame(OP_CONTINUATION, fin=False, mask=MASK)  # of a fragmented message


def frames_of(kind: str) -> tuple[bytes, bytes]:
    """(what opens the attack, the chunk it repeats) for a flood of `kind`."""
    if kind == "pong":
        return b"", EMPTY_PONG * 2000
    if kind == "ping":
        return b"", EMPTY_PING * 2000
    if kind == "continuation":  # a text message that never ends, in empty pieces
        return client_frame(OP_TEXT, b'{"room":', fin=False, mask=MASK), EMPTY_PIECE * 2000
    return b"", client_frame(OP_TEXT, b'{"room":"flood","text":"x"}', mask=MASK) * 500


# -- 1. a reader that never yields --------------------------------------------

def _flood(start_server, mode: str, kind: str, connections: int, seconds: float) -> None:
    grace = 4
    server = start_server(mode, shutdown_grace_seconds=grace)
    # each probe may take 5 s, and the flood lasts longer: a server that stalls for as long
    # as the flood lasts fails, one that keeps serving passes however slow the machine is
    with Watch(server, f"abuse_flood_{kind}[{mode}]", deadline=5.0) as watch:
        attackers = []
        for i in range(connections):
            sock = raw_upgrade(server.port, f"flood{i}")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            opening, chunk = frames_of(kind)
            sock.sendall(opening)
            attackers.append((sock, stream(sock, chunk, seconds)))
        time.sleep(seconds * 0.8)  # the attack is in full swing: probes run meanwhile
        watch.sample()
        watch.stop()
        watch.assert_alive()
        sigterm_exits_0(server, grace)  # while the flood may still be running
    for sock, thread in attackers:
        thread.join(seconds + 5)
        sock.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["pong"])
def test_a_frame_flood_stalls_nobody_and_sigterm_still_works(start_server, mode, kind):
    _flood(start_server, mode, kind, connections=1, seconds=6.5)


@slow
@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("kind", ["continuation", "ping", "message"])
def test_a_ping_or_message_flood_stalls_nobody(start_server, mode, kind):
    _flood(start_server, mode, kind, connections=4 if kind == "message" else 1, seconds=6.5)


def test_control_frames_count_against_the_rate_limit(start_server):
    server = start_server(max_messages_per_second=5, max_flood_seconds=1)
    sock = raw_upgrade(server.port, "pinger")
    for _ in range(400):  # 80 seconds' worth of pings at once, then 3 more seconds of them
        sock.sendall(EMPTY_PING)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            sock.sendall(EMPTY_PING)
        except OSError:
            break
        time.sleep(0.02)
    opcodes, code = read_frames_until_end(sock, timeout=10)
    assert code == 1008
    assert opcodes.count(OP_PONG) < 400  # not every ping was answered: most were over the rate


# -- 2. a writer stuck forever -------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_a_client_that_stops_reading_mid_write_is_cut_off_in_bounded_time(start_server, mode):
    server = start_server(mode, ping_interval_seconds=1, ping_timeout_seconds=2,
                          write_timeout_seconds=2, max_message_length=60000, max_messages_per_second=100000,
                          max_flood_seconds=1000)
    silent = raw_upgrade(server.port, "silent", receive_buffer=4096)
    for _ in range(200):  # pings it never reads the answers to; then silence
        silent.sendall(client_frame(OP_PING, b"p" * 125))
    with Watch(server, f"abuse_stuck_writer[{mode}]") as watch:
        poster = server.connect("poster")
        text = "x" * 60000
        for i in range(150):  # 9 MB: more than the socket buffers to `silent` hold
            send(poster, room="big", text=text, id=f"m{i}")
            while receive(poster, timeout=30).get("id") != f"m{i}":
                pass  # the poster reads, so only `silent` stalls
        wait_for(lambda: metric(server, "nane_open_connections") <= 2, timeout=20,
                 what="the silent client to be cut off")
        watch.assert_alive()
    silent.close()


# -- 3. a POST body that never comes -------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_a_body_that_never_comes_is_refused_or_timed_out(start_server, mode):
    server = start_server(mode, http_idle_timeout_seconds=2)
    huge = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    huge.sendall(b"POST /api/rooms HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n")
    answer = huge.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    promised = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    promised.sendall(b"POST /api/rooms HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    started = time.monotonic()
    ended = b""
    try:
        while chunk := promised.recv(4096):  # an answer (or not), then the end
            ended += chunk
    except ConnectionResetError:
        pass
    assert time.monotonic() - started < 2 + 5, ended
    for sock in (huge, promised):
        sock.close()


# -- 4. one writer per socket -----------------------------------------------------

@pytest.mark.parametrize("mode", GEVENT_FIRST)
def test_pings_during_a_blocked_write_never_leak_a_connection_slot(start_server, mode):
    server = start_server(mode, max_connections=6, max_message_length=60000, max_messages_per_second=100000,
                          max_flood_seconds=1000)
    poster = server.connect("poster")
    attackers = [raw_upgrade(server.port, f"pinger{i}", receive_buffer=4096) for i in range(5)]
    text = "y" * 60000
    for i in range(100):  # 6 MB each: every attacker's session blocks in a write
        send(poster, room="big", text=text, id=f"m{i}")
        while receive(poster, timeout=30).get("id") != f"m{i}":
            pass
    for _ in range(50):
        for sock in attackers:
            try:
                sock.sendall(client_frame(OP_PING, b"q" * 100))
            except OSError:
                pass
    for sock in attackers:  # gone without a close frame
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    wait_for(lambda: metric(server, "nane_open_connections") == 1, timeout=15,
             what="every attacker's slot to be given back")
    newcomer = server.connect("newcomer")
    send(newcomer, room="r", text="I got in")
    while receive(newcomer)["text"] != "I got in":
        pass
    assert "ConcurrentObjectUseError" not in server.log()


@pytest.mark.parametrize("mode", ALL_MODES)
def test_after_the_handshake_only_the_transport_writes(start_server, mode):
    """No library reads or writes behind the transport: every frame comes from nane's reader.

    A library reader left running would answer the pings itself and swallow
    the message (no echo); a library close after ours would add a frame
    after the close.
    """
    server = start_server(mode)
    ws = server.connect("one-writer")
    for i in range(3):
        ws.ping(f"ping {i}")
    send(ws, room="r", text="mine")
    opcodes = []
    while not opcodes or opcodes[-1] != websocket.ABNF.OPCODE_TEXT:
        opcodes.append(ws.recv_data(control_frame=True)[0])
    assert opcodes == [websocket.ABNF.OPCODE_PONG] * 3 + [websocket.ABNF.OPCODE_TEXT]
    ws.sock.sendall(client_frame(0x8, struct.pack("!H", 1000)))
    opcodes, code = read_frames_until_end(ws.sock, timeout=5)
    assert opcodes == [0x8] and code == 1000


# -- 5. stalled readers hold references, not copies ----------------------------

@pytest.mark.parametrize("mode", MODES)
def test_stalled_readers_hold_shared_frames_not_copies(start_server, mode):
    server = start_server(mode, max_message_length=60000, max_messages_per_second=100000,
                          max_flood_seconds=1000,
                          max_outbox_bytes=64 * MiB)  # the poster reads its 9 MB of echoes late
    stalled = [raw_upgrade(server.port, f"stalled{i}", receive_buffer=4096) for i in range(10)]
    with Watch(server, f"abuse_stalled_readers[{mode}]") as watch:
        poster = server.connect("poster")
        poster.settimeout(30)
        text = "z" * 60000
        for i in range(150):  # 9 MB of messages, to 10 clients that read nothing
            send(poster, room="big", text=text, id=f"m{i}")
        while receive(poster, timeout=30).get("id") != "m149":
            pass
        time.sleep(1)  # let every session try its writes: there is no event for "blocked"
        watch.sample()
        watch.assert_alive()
    # the history (9 MB of messages, held as text, JSON and frame) and nothing per client;
    # not 10 copies of what each could not take (90 MB)
    assert watch.growth < 64 * MiB, watch.growth / MiB
    for sock in stalled:
        sock.close()


@slow
def test_a_stalled_reader_is_cut_off_by_its_outbox_byte_budget(start_server):
    server = start_server(max_outbox_bytes=2 * MiB, max_message_length=60000, max_messages_per_second=100000,
                          max_flood_seconds=1000, write_timeout_seconds=1000)
    stalled = raw_upgrade(server.port, "stalled", receive_buffer=4096)
    poster = server.connect("poster")
    for _ in range(200):  # 12 MB
        send(poster, room="big", text="w" * 60000)
        receive(poster)  # its echo: the poster keeps up, only the stalled one is slow
    wait_for(lambda: metric(server, "nane_disconnects_total", reason="slow_consumer") >= 1,
             timeout=8, what="a 1008 slow consumer cut-off")
    stalled.close()


# -- 6. HTTP answers are not copied per client -----------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_history_readers_that_never_read_cost_no_copies_and_are_dropped(start_server, mode):
    server = start_server(mode, max_message_length=60000, max_messages_per_second=100000,
                          max_flood_seconds=1000,
                          http_idle_timeout_seconds=8,
                          max_history_bytes_per_address=64 * MiB,  # one poster fills the room
                          max_outbox_bytes=64 * MiB)  # the poster reads its 9 MB of echoes late
    poster = server.connect("poster")
    poster.settimeout(30)
    for i in range(150):
        send(poster, room="big", text="h" * 60000, id=f"m{i}")
    while receive(poster, timeout=30).get("id") != "m149":
        pass
    poster.close()
    status, _, body = server.request("/api/rooms/big/history", timeout=30)
    assert status == 200 and len(body) > 8 * MiB
    with Watch(server, f"abuse_history_readers[{mode}]") as watch:
        readers = []
        for _ in range(10):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(b"GET /api/rooms/big/history HTTP/1.1\r\nHost: x\r\n\r\n")
            readers.append(sock)
        time.sleep(1)  # every request answered as far as it goes: there is no event for it
        watch.sample()
        watch.assert_alive()
        ports = {sock.getsockname()[1] for sock in readers}
        wait_for(lambda: not [c for c in watch.worker.net_connections()
                              if c.raddr and c.raddr.port in ports
                              and c.status == psutil.CONN_ESTABLISHED],
                 timeout=8 + 15, what="the stuck responses to be dropped")
    assert watch.growth < 40 * MiB, watch.growth / MiB  # not 10 copies of 9 MB
    assert "Traceback" not in server.log()
    for sock in readers:
        sock.close()


# -- 7. fragments and buffers ------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_a_message_in_endless_fragments_is_refused(start_server, mode):
    server = start_server(mode)
    with Watch(server, f"abuse_fragments[{mode}]") as watch:
        sock = raw_upgrade(server.port, "fragments")
        sock.sendall(client_frame(OP_TEXT, b'{"room":', fin=False, mask=MASK))
        try:
            for _ in range(100):  # up to 1.2 MB of empty continuation frames
                sock.sendall(EMPTY_PIECE * 2000)
        except OSError:
            pass  # cut off while still sending
        assert read_frames_until_end(sock, timeout=10)[1] in (1008, 1009)
        watch.assert_alive()
    assert watch.growth < 16 * MiB, watch.growth / MiB


@pytest.mark.parametrize("mode", GEVENT_FIRST)
def test_big_messages_faster_than_they_are_taken_are_not_buffered(start_server, mode):
    server = start_server(mode)
    with Watch(server, f"abuse_big_message_flood[{mode}]") as watch:
        sock = raw_upgrade(server.port, "pusher", receive_buffer=4096)
        frame = client_frame(OP_TEXT, json.dumps({"room": "r", "text": "b" * 60000}).encode())
        stream(sock, frame * 20, seconds=4).join(10)  # as much as it can in 4 s
        watch.sample()
        watch.assert_alive()
    assert watch.growth < 40 * MiB, watch.growth / MiB
    sock.close()


# -- 8. a total budget for the history -------------------------------------------

@pytest.mark.parametrize("mode", ["embedded"])
def test_the_history_keeps_to_its_byte_budget(start_server, mode):
    budget = 4 * MiB
    server = start_server(mode, max_history_bytes=budget, max_message_length=60000,
                          max_messages_per_second=100000,
                          max_flood_seconds=1000)
    assert server.get("/api/settings")["result"]["max_history_bytes"] == budget
    posters = [server.connect(f"poster{i}") for i in range(4)]
    with Watch(server, f"abuse_history_budget[{mode}]") as watch:
        for i in range(40):  # 4 x 40 x 60 KB = 9.6 MB into 20 rooms, read as it goes
            for n, poster in enumerate(posters):
                send(poster, room=f"room{(i + n) % 20}", text="m" * 60000, id=f"{n}-{i}")
            for poster in posters:  # every poster sees every message: none piles up unread
                seen = 0
                while seen < len(posters):
                    seen += receive(poster, timeout=30).get("sender", {}).get(
                        "username", "").startswith("poster")
        watch.sample()
        watch.assert_alive()
    kept = 0
    for room in server.get("/api/rooms")["result"]:
        history = server.get(f"/api/rooms/{room['name']}/history")["result"]
        kept += sum(len(json.dumps(m, ensure_ascii=False).encode()) for m in history)
    assert 0 < kept <= budget
    last_room = server.get(f"/api/rooms/room{(39 + 3) % 20}/history")["result"]
    assert last_room[-1]["id"] == "3-39"  # the newest message is never forgotten
    # the README: a message in the history costs about 5 x its JSON (text, JSON, wire frame,
    # room summary, cached /history body)
    assert watch.growth < 5 * budget + 24 * MiB, watch.growth / MiB


# -- 9. malformed handshakes are refused clearly ----------------------------------

def raw_request(port: int, head: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer and (chunk := sock.recv(4096)):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def upgrade_head(**headers) -> bytes:
    return handshake_request("/ws?username=odd", "x", **headers)


BAD_HANDSHAKES = {
    "version 99": upgrade_head(Sec_WebSocket_Version="99"),
    "no version": upgrade_head(Sec_WebSocket_Version=None),
    "no key": upgrade_head(Sec_WebSocket_Key=None),
    "key not base64": upgrade_head(Sec_WebSocket_Key="not base64 at all!"),
    "non-ASCII subprotocol": upgrade_head(Sec_WebSocket_Protocol="чат"),
    "folded preflight": (b"OPTIONS /api/rooms HTTP/1.1\r\nHost: x\r\nOrigin: http://a\r\n"
                         b"Access-Control-Request-Method: GET\r\n"
                         b"Access-Control-Request-Headers: x-one,\r\n x-two\r\n\r\n"),
}


@pytest.mark.parametrize("mode", ALL_MODES)
def test_malformed_handshakes_get_a_4xx_with_a_reason(start_server, mode):
    server = start_server(mode)
    for what, head in BAD_HANDSHAKES.items():
        answer = raw_request(server.port, head)
        status = answer[9:12]
        assert status.startswith(b"4"), (what, answer)
    assert "Traceback" not in server.log(), server.log()
    client = server.connect("after")
    send(client, room="r", text="fine")
    assert receive(client)["text"] == "fine"


# -- 10. RFC 6455 protocol errors ---------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_protocol_errors_close_1002(start_server, mode):
    server = start_server(mode)
    unmasked = raw_upgrade(server.port, "unmasked")
    unmasked.sendall(server_frame(OP_TEXT, b"hello"))  # a client frame without a mask
    assert read_frames_until_end(unmasked, 10)[1] == 1002
    # codes that must never be sent on the wire, and one no RFC or registry assigns
    for code in (1005, 1006, 1015, 2999):
        sock = raw_upgrade(server.port, f"close{code}")
        sock.sendall(client_frame(OP_CLOSE, code.to_bytes(2, "big")))
        assert read_frames_until_end(sock, 10)[1] == 1002, code
    sock = raw_upgrade(server.port, "badreason")
    sock.sendall(client_frame(OP_CLOSE, close_payload(1000) + b"\xff"))  # a reason that is not UTF-8
    assert read_frames_until_end(sock, 10)[1] == 1007


@pytest.mark.parametrize("mode", MODES)
def test_an_oversized_message_is_refused_from_its_header_with_the_documented_reason(
        start_server, mode):
    server = start_server(mode, max_frame_bytes=4096, max_message_length=100,
                          max_room_title_length=20, max_id_length=16)
    sock = raw_upgrade(server.port)
    sock.sendall(frame_header(OP_TEXT, 1 << 30, mask=MASK))  # 1 GiB declared, none sent
    sock.settimeout(10)
    frames = FrameParser().feed(sock.recv(4096))
    assert frames == [(True, OP_CLOSE, close_payload(1009, "message larger than 4096 bytes"))]


# -- 11. a refused client hears why ---------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [4 * MiB, 16 * MiB])
def test_a_refused_client_receives_its_1009(start_server, mode, size):
    server = start_server(mode)
    client = server.connect("huge")
    client.send(json.dumps({"room": "r", "text": "x" * size}))  # must not be reset mid-write
    assert receive_close(client, timeout=15)[0] == 1009


# -- 13. many connections, one address --------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_connections_per_address_are_limited(start_server, mode):
    server = start_server(mode, max_connections_per_address=3)
    clients = [server.connect(f"c{i}") for i in range(3)]
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        server.connect("c3")
    assert refused.value.status_code == 429
    clients.pop().close()
    wait_for(lambda: metric(server, "nane_open_connections") == 2, what="a slot given back")
    server.connect("c4").close()


def _sent_and_limited(server, headers: list[dict]) -> tuple[int, int]:
    """Three connections each send 40 messages at once; (delivered, rate-limited)."""
    clients = [server.connect(f"n{i}", query="v=2", header=h) for i, h in enumerate(headers)]
    for n, client in enumerate(clients):
        for i in range(40):
            send(client, room="r", text=f"{n}:{i}", id=f"{n}:{i}")
    delivered = limited = 0
    for client in clients:
        client.settimeout(0.5)
        try:
            while True:
                frame = json.loads(client.recv())
                if "error" in frame:
                    limited += 1
                else:
                    delivered += 1
        except websocket.WebSocketTimeoutException:
            pass
        client.close()
    return delivered, limited


@pytest.mark.parametrize("mode", ["embedded", pytest.param("gunicorn-gevent", marks=slow)])
def test_messages_per_address_are_limited_and_forwarded_for_only_from_a_trusted_proxy(
        start_server, mode):
    # 3 connections x 40 messages at once: each connection's own burst (5 x 20) allows them,
    # the address's (5 x 10) does not
    trusted = start_server(mode, max_messages_per_second_per_address=10,
                           forwarded_allow_ips="127.0.0.1")
    spoofed = [{"X-Forwarded-For": f"203.0.113.{i}"} for i in range(3)]
    _, limited = _sent_and_limited(trusted, spoofed)
    assert limited == 0  # three addresses behind a trusted proxy: three budgets
    _, limited = _sent_and_limited(trusted, [{}, {}, {}])
    assert limited > 0  # one address: one budget
    untrusted = start_server(mode, max_messages_per_second_per_address=10,
                             forwarded_allow_ips="192.0.2.1")
    _, limited = _sent_and_limited(untrusted, spoofed)
    assert limited > 0  # the header is ignored from a proxy nobody trusts


# -- 14. frames that are valid but cost much to parse ------------------------------------

def paced_attack(sock: socket.socket, frame: bytes, per_second: float, seconds: float,
                 closes: list) -> threading.Thread:
    """Send `frame` `per_second` times a second for at most `seconds`, reading what comes back.

    Appends the server's close frame, `(code, reason)`, to `closes` when one arrives.
    """
    def run():
        import select

        parser = FrameParser()
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                sock.sendall(frame)
                pause_until = time.monotonic() + 1 / per_second
                while (left := pause_until - time.monotonic()) > 0:
                    if not select.select([sock], [], [], left)[0]:
                        continue
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    for _, opcode, payload in parser.feed(chunk):
                        if opcode == OP_CLOSE:
                            closes.append(parse_close(payload))
                            return
        except OSError:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("mode", ALL_MODES)
def test_frames_costly_to_parse_from_one_address_stall_nobody_and_are_closed(start_server, mode):
    """Issue 22, item 5: 20 connections from one address, each under the per-connection
    frame rate, send valid 125 KB frames of 29 integers of 4,300 digits (milliseconds of
    `json.loads` each). They are charged by their length and dropped unparsed, the drops by
    the address's budget close them as a flood does (1008), and a bystander from another
    address is answered within a second all along."""
    server = start_server(mode)
    payload = ('{"n":[' + ",".join(["7" * 4300] * 29) + "]}").encode()
    frame = client_frame(OP_TEXT, payload, mask=MASK)
    closes: list = []
    with Watch(server, f"abuse_costly_frames[{mode}]", interval=0.1, deadline=1.0) as watch:
        attackers = [raw_upgrade(server.port, f"costly{i}&v=2", source="127.0.0.2")
                     for i in range(20)]
        threads = [paced_attack(sock, frame, per_second=15, seconds=15, closes=closes)
                   for sock in attackers]
        for thread in threads:
            thread.join(20)
        watch.assert_alive()
    for sock in attackers:
        sock.close()
    assert closes == [(1008, "too many messages")] * 20, closes


# -- 15. idle connections and file descriptors ---------------------------------------------

def open_idle(port: int, source: str, count: int, seconds: float = 10.0) -> list[socket.socket]:
    """Up to `count` TCP connections from `source` that never send a byte (at most `seconds`)."""
    held, deadline = [], time.monotonic() + seconds
    while len(held) < count and time.monotonic() < deadline:
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(0.5)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:  # the listen queue is full: a server that stopped accepting
            sock.close()
            continue
        held.append(sock)
    return held


@pytest.mark.parametrize("mode", ALL_MODES)
def test_idle_sockets_from_one_address_leave_descriptors_for_everyone_else(start_server, mode):
    """Issue 22, item 2: with 256 file descriptors, one address (127.0.0.2) opens 300 idle
    TCP connections; /healthz and a websocket from another address (127.0.0.1) still answer
    within a second. Then six addresses take every descriptor there is: the accept loop
    pauses with one log line, no traceback, and serves again once they let go."""
    limit = 256
    server = start_server(mode, command=lambda port: [
        "prlimit", f"--nofile={limit // 2}:{limit}", "--", *RUN_MODES[mode](port)])
    wait_for(lambda: f"event=file_limit soft={limit} hard={limit} was={limit // 2} "
             "sockets_per_address=48" in server.log(), what="the file limit raised and logged")
    idle = open_idle(server.port, "127.0.0.2", limit + 44)
    assert len(idle) == limit + 44  # the server takes them all off its queue
    status, _, body = server.request("/healthz", timeout=1.0)
    assert status == 200, body
    ws = websocket.create_connection(f"{server.ws_base}/ws?username=second", timeout=1.0)
    send(ws, room="r", text="still room for me")
    assert receive(ws, timeout=1.0)["text"] == "still room for me"
    assert "event=sockets_refused remote=127.0.0.2 held=48 share=48" in server.log()

    crowd = [sock for n in range(3, 9) for sock in open_idle(server.port, f"127.0.0.{n}", 48, 3)]
    wait_for(lambda: "event=accept_paused error=EMFILE" in server.log(),
             what="the accept loop to run out of descriptors")
    for sock in idle + crowd:
        sock.close()
    wait_for(lambda: server.request("/healthz", timeout=1.0)[0] == 200, timeout=15,
             what="the server to accept again")
    log = server.log()
    assert "Traceback" not in log and "Too many open files" not in log, log[-3000:]
    assert log.count("event=accept_paused") <= 5, log.count("event=accept_paused")
    ws.close()


# -- 16. the actor view of a big server --------------------------------------------------

def make_rooms(server, count: int, batch: int = 500) -> None:
    """`count` rooms of one message each, posted and echoed in batches (the outbox keeps up)."""
    poster = server.connect("builder")
    for start in range(0, count, batch):
        for i in range(start, min(start + batch, count)):
            send(poster, room=f"room{i}", text="x")
        last = f"room{min(start + batch, count) - 1}"
        while receive(poster, timeout=30)["room"] != last:
            pass
    poster.close()


@pytest.mark.parametrize("mode", ALL_MODES)
def test_polling_the_actor_view_of_10000_rooms_stalls_nobody(start_server, mode):
    """Issue 22, item 6: with 10,000 rooms, eight clients polling /api/actors as fast as they
    can get a bounded answer (100 rooms listed, the totals given), and a bystander's echo and
    /healthz answer within a second all along."""
    server = start_server(mode, max_messages_per_second=100000, max_flood_seconds=1000,
                          max_rooms_per_address=10000)  # one client makes every room
    make_rooms(server, 10000)
    sizes: list[int] = []
    statuses: list[int] = []
    stop = threading.Event()

    def poll():
        for _ in range(2000):  # bounded in count, and in time by `stop`
            if stop.is_set():
                return
            status, _, body = server.request("/api/actors", timeout=10)
            statuses.append(status)
            sizes.append(len(body))

    with Watch(server, f"abuse_actor_view[{mode}]", interval=0.1, deadline=1.0) as watch:
        pollers = [threading.Thread(target=poll, daemon=True) for _ in range(8)]
        for poller in pollers:
            poller.start()
        stop.wait(5)  # the polling runs this long while the bystander is probed
        stop.set()
        for poller in pollers:
            poller.join(15)
        watch.assert_alive()
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    view = server.get("/api/actors")["result"]
    rooms = [actor for actor in view["actors"] if actor["kind"] == "room"]
    assert view["rooms_total"] == 10000 and len(rooms) == 100  # max_rooms, "probe" included
    assert [room["room"] for room in rooms[:2]] == ["probe", "room9999"]  # most recently active first
    assert max(sizes) < 200_000, max(sizes)  # not 2.9 MB
    figure(f"abuse_actor_view[{mode}]", polls=len(statuses), answer_kb=round(max(sizes) / 1024))
