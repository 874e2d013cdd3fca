"""Black-box tests of whole server processes: the three run modes, limits, and load."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
import time

import psutil
import pytest
import websockets

from app.websocket.codec import OP_TEXT
from tests.conftest import ROOT, Server, receive, send
from tests.ops_helpers import raw_upgrade, read_frames_until_end
from tests.ports import free_port
from tests.wsframes import frame_header

ALL_MODES = ["embedded", "gunicorn-geventwebsocket", "gunicorn-gevent"]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_each_run_mode_serves_the_protocol(start_server, mode):
    server = start_server(mode, kozma=1, kozma_first_delay=0.1, kozma_max_pause=30)
    a, b = server.connect("ann"), server.connect("bob", query="v=2")
    assert receive(a)["room"] == "kozma"  # the bot runs in every mode
    assert receive(b)["room"] == "kozma"
    send(a, room="Lobby", text="hello", id="m1")
    for ws in (a, b):
        message = receive(ws)
        assert (message["room"], message["text"], message["id"]) == ("Lobby", "hello", "m1")
    b.send("{oops")
    assert receive(b) == {"error": "invalid JSON"}
    send(b, ping=True)
    assert receive(b) == {"pong": True}
    history = server.get("/api/rooms/lobby/history", method="POST")["result"]
    assert [m["text"] for m in history] == ["hello"]
    names = {r["name"] for r in server.get("/api/rooms")["result"]}
    assert names == {"Lobby", "kozma"}


@pytest.mark.parametrize("mode", ["embedded", "gunicorn-gevent"])
def test_nameless_is_refused_with_401(start_server, mode):
    import websocket
    server = start_server(mode)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        server.connect(None)
    assert refused.value.status_code == 401


@pytest.mark.parametrize("mode", ALL_MODES)
def test_oversized_frame_closes_1009_before_it_is_buffered(start_server, mode):
    # a small frame limit needs small message limits: 12 x (100 + 20 + 16) + 1024 = 2656 fits
    server = start_server(mode, max_frame_bytes=4096, max_message_length=100,
                          max_room_title_length=20, max_id_length=16)
    process = psutil.Process(server.process.pid)
    worker = (process.children() or [process])[0]
    bystander = server.connect("bystander")
    before = worker.memory_info().rss
    sock = raw_upgrade(server.port)
    declared = 200 * 1024 * 1024  # a 200 MB frame: header first, then a little payload
    header = frame_header(OP_TEXT, declared, mask=bytes(4))  # zero mask: text stays text
    sock.sendall(header)
    try:
        sock.sendall(b"x" * 8192)
    except OSError:
        pass  # the server may already have closed
    assert read_frames_until_end(sock, 5.0)[1] == 1009
    assert worker.memory_info().rss - before < 20 * 1024 * 1024
    send(bystander, room="r", text="others unaffected")
    assert receive(bystander)["text"] == "others unaffected"


def test_a_client_that_stops_reading_is_cut_off_and_nobody_else_notices(start_server):
    server = start_server(max_outbox_messages=100, max_messages_per_second=10000)  # a flood on purpose
    stuck = raw_upgrade(server.port, "stuck", receive_buffer=4096)
    readers = [server.connect(f"reader{i}") for i in range(3)]
    sender = server.connect("sender")
    text = "x" * 8000
    count = 600  # 4.8 MB: far more than the socket buffers between us and `stuck` hold
    for i in range(count):
        send(sender, room="flood", text=f"{i} {text}")
        if i % 20 == 19:  # keep the readers drained so only `stuck` falls behind
            for ws in readers + [sender]:
                for _ in range(20):
                    receive(ws)
    send(sender, room="after", text="still flowing")
    for ws in readers:
        assert receive(ws)["text"] == "still flowing"
    # the server cut `stuck` off with 1008 (its close frame cannot get through a full
    # buffer, so the server's log is where the reason shows)
    log = server.log()
    assert "event=slow_consumer session=session:1" in log
    assert 'event=disconnect session=session:1 code=1008 reason="slow consumer"' in log
    stuck.close()



def test_bad_configuration_fails_at_start_naming_the_variable():
    env = {**os.environ, "NANE_MAX_ROOMS": "lots"}
    result = subprocess.run([sys.executable, "-m", "app", "--addr", f"127.0.0.1:{free_port()}"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "NANE_MAX_ROOMS" in result.stderr
    result = subprocess.run([sys.executable, "-m", "app", "--max-rooms", "0"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "--max-rooms" in result.stderr


def run_procfile(tmp_path, stderr=subprocess.STDOUT, **env) -> Server:
    """The Procfile's `web:` command, run literally with PORT set; stdout to tmp_path/out."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NANE_")}
    environ.update(PORT=str(port), PYTHONUNBUFFERED="1", **env)
    command = (ROOT / "Procfile").read_text().split("web:", 1)[1].strip()
    server = Server.__new__(Server)  # a Server whose process we start ourselves
    server.base, server.ws_base = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    server.log_path, server._log = tmp_path / "out", open(tmp_path / "out", "wb")
    server.process = subprocess.Popen(shlex.split(command), cwd=ROOT, env=environ,
                                      stdout=server._log, stderr=stderr, start_new_session=True)
    server.wait_ready()
    return server


def test_procfile_command_pins_one_worker_despite_web_concurrency(tmp_path):
    server = run_procfile(tmp_path, WEB_CONCURRENCY="3")
    try:
        assert len(psutil.Process(server.process.pid).children()) == 1
        clients = [server.connect(f"c{i}") for i in range(6)]
        send(clients[0], room="one", text="everyone sees this")
        for ws in clients:
            assert receive(ws)["text"] == "everyone sees this"
    finally:
        server.stop()


# -- load correctness ----------------------------------------------------------

CLIENTS, MESSAGES, ROOMS = 200, 20, 10


async def _load(port: int) -> tuple[dict, float]:
    total = CLIENTS * MESSAGES
    received: dict[int, list[tuple[int, int]]] = {}

    async def client(n: int, ready: asyncio.Event, go: asyncio.Event):
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws?username=c{n}",
                                      max_queue=None, open_timeout=20) as ws:
            got = received.setdefault(n, [])
            ready.set()
            await go.wait()
            for i in range(MESSAGES):
                await ws.send(json.dumps({"room": f"room{(n + i) % ROOMS}",
                                          "text": f"{n} {i}", "id": f"{n}-{i}"}))
            while len(got) < total:
                message = json.loads(await asyncio.wait_for(ws.recv(), 20))
                sender, seq = map(int, message["text"].split())
                assert message["id"] == f"{sender}-{seq}"
                got.append((sender, seq))

    go = asyncio.Event()
    readies = [asyncio.Event() for _ in range(CLIENTS)]
    tasks = [asyncio.create_task(client(n, readies[n], go)) for n in range(CLIENTS)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
    started = time.monotonic()
    go.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return received, time.monotonic() - started


def test_200_clients_20_messages_10_rooms_everything_exactly_once_in_order(start_server):
    server = start_server(max_messages_per_second_per_address=100000)  # 200 users, one address
    received, seconds = asyncio.run(_load(server.port))
    expected = {(s, i) for s in range(CLIENTS) for i in range(MESSAGES)}
    for n, got in received.items():
        assert len(got) == len(set(got)) == CLIENTS * MESSAGES, n  # exactly once
        assert set(got) == expected
        for sender in range(CLIENTS):  # each sender's messages in the order sent
            seqs = [seq for s, seq in got if s == sender]
            assert seqs == sorted(seqs)
    delivered = CLIENTS * CLIENTS * MESSAGES
    print(f"\nload: {CLIENTS} clients x {MESSAGES} messages into {ROOMS} rooms: "
          f"{delivered} deliveries in {seconds:.2f}s ({delivered / seconds:,.0f} frames/s)")


def test_gunicorn_logs_logfmt_lines_on_stdout(tmp_path):
    """A platform log drain reads stdout: gunicorn's own lines come there, in our format."""
    with open(tmp_path / "err", "wb") as err:
        server = run_procfile(tmp_path, stderr=err)
        try:
            ws = server.connect("logged")
            send(ws, room="r", text="x")
            receive(ws)
            ws.close()
        finally:
            server.stop()
    lines = (tmp_path / "out").read_text().splitlines()
    assert any("logger=gunicorn.error" in line and "Booting worker" in line for line in lines)
    assert any("event=ws_open" in line for line in lines)
    assert all(line.startswith("time=") and " level=" in line for line in lines), lines
    assert (tmp_path / "err").read_text().strip() == ""
