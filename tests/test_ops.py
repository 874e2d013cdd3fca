"""Operations against real server processes: graceful stop, keep-alive, limits, health, metrics.

Every run mode where the behaviour depends on the mode (the transports and the
servers differ: embedded pywsgi, gunicorn's GeventWebSocketWorker, gunicorn's
gevent worker with nane's own 101).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import time

import pytest
import websocket
import websockets

from actors.chat.flood import FloodGuard, cost_of
from tests.conftest import receive, receive_close, send
from tests.ops_helpers import figure, metric, raw_upgrade, read_frames_until_end, scrape, wait_for

ALL_MODES = ["embedded", "gunicorn-geventwebsocket", "gunicorn-gevent"]


# -- graceful stop -------------------------------------------------------------

CLIENTS_UNDER_LOAD = 40


async def _load_then_sigterm(server, grace: float) -> dict:
    """CLIENTS_UNDER_LOAD clients send and receive until SIGTERM; what each saw, and timings."""
    seen: dict[int, list[str]] = {}
    codes: dict[int, int | None] = {}
    sent = [0]
    flowing, go = asyncio.Event(), asyncio.Event()
    connected = []

    async def client(n: int):
        async with websockets.connect(f"{server.ws_base}/ws?username=load{n}", max_queue=None,
                                      open_timeout=20, ping_interval=None) as ws:
            got = seen.setdefault(n, [])
            connected.append(n)
            if len(connected) == CLIENTS_UNDER_LOAD:
                go.set()
            await asyncio.wait_for(go.wait(), 30)

            async def sender():
                i = 0
                while True:
                    await ws.send(json.dumps({"room": f"r{n % 5}", "text": f"{n}:{i}"}))
                    sent[0] += 1
                    i += 1
                    await asyncio.sleep(0.05)  # 800 messages/s in all, 32,000 deliveries/s

            task = asyncio.create_task(sender())
            try:
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 15))
                    got.append(message["text"])
                    if len(got) >= 200:
                        flowing.set()
            except websockets.ConnectionClosed as closed:
                codes[n] = closed.rcvd.code if closed.rcvd else None
            finally:
                task.cancel()

    tasks = [asyncio.create_task(client(n)) for n in range(CLIENTS_UNDER_LOAD)]
    await asyncio.wait_for(flowing.wait(), 30)
    signalled = time.monotonic()
    os.killpg(server.process.pid, signal.SIGTERM)

    def wait_for_exit() -> tuple[int, float]:  # timed by its own thread, not by the clients
        code = server.process.wait(grace + 30)
        return code, time.monotonic() - signalled

    exited = asyncio.create_task(asyncio.to_thread(wait_for_exit))
    await asyncio.wait_for(asyncio.gather(*tasks), grace + 30)  # a busy client reads slowly
    all_closed = time.monotonic() - signalled
    exit_code, exited_after = await exited
    return {"seen": seen, "codes": codes, "closed_after": all_closed,
            "exited_after": exited_after, "exit_code": exit_code, "sent": sent[0]}


@pytest.mark.parametrize("mode", ALL_MODES)
def test_sigterm_under_load_every_client_gets_1001_and_the_process_exits_0_in_time(
        start_server, mode):
    grace = 6
    server = start_server(mode, shutdown_grace_seconds=grace, max_messages_per_second=1000)
    result = asyncio.run(_load_then_sigterm(server, grace))
    assert result["codes"] == {n: 1001 for n in range(CLIENTS_UNDER_LOAD)}
    assert result["exit_code"] == 0, server.log()
    assert result["exited_after"] < grace, result["exited_after"]
    # Outboxes drained before the close: every client saw the very same messages, in one order.
    sequences = list(result["seen"].values())
    longest = max(sequences, key=len)
    assert all(sequence == longest for sequence in sequences)
    figure(f"sigterm[{mode}]", clients=CLIENTS_UNDER_LOAD, frames_sent=result["sent"],
           delivered_to_each=len(longest),
           lost=sum(len(longest) - len(sequence) for sequence in sequences),
           all_closed_s=round(result["closed_after"], 3),
           exited_s=round(result["exited_after"], 3), grace_s=grace)


def test_sigterm_with_no_clients_exits_0_without_waiting_for_the_grace(start_server):
    grace = 60  # nothing to drain: an exit before the grace is over proves it did not wait
    server = start_server(shutdown_grace_seconds=grace)
    started = time.monotonic()
    assert server.stop(timeout=grace - 10) == 0
    figure("sigterm_idle", exited_s=round(time.monotonic() - started, 3), grace_s=grace)


# -- keep-alive: pings, dead peers, idle HTTP ---------------------------------

@pytest.mark.parametrize("mode", ["embedded", "gunicorn-gevent"])
def test_a_vanished_client_is_found_by_the_pinger_and_a_quiet_one_is_kept(start_server, mode):
    server = start_server(mode, ping_interval_seconds=1, ping_timeout_seconds=1)
    quiet = server.connect("quiet")  # answers pings (websocket-client does, inside recv)
    pings, listening = [], threading.Event()
    listening.set()

    def listen():  # a quiet but healthy client: reads (and so answers pings), sends nothing
        quiet.settimeout(0.2)
        while listening.is_set():
            try:
                opcode, _ = quiet.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                continue
            if opcode == websocket.ABNF.OPCODE_PING:
                pings.append(time.monotonic())

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    vanished = raw_upgrade(server.port, "vanished")  # never reads, never answers: no FIN either
    started = time.monotonic()
    wait_for(lambda: metric(server, "nane_disconnects_total", reason="ping_timeout") >= 1,
             timeout=8, what="the ping timeout")
    detected = time.monotonic() - started
    opcodes, code = read_frames_until_end(vanished, timeout=5)
    assert 0x9 in opcodes and code == 1011  # it was pinged, then closed: ping timeout
    wait_for(lambda: len(pings) >= 3, timeout=6, what="three pings to the quiet client")
    listening.clear()
    listener.join(5)
    send(quiet, room="r", text="still here")
    assert receive(quiet)["text"] == "still here"
    assert metric(server, "nane_disconnects_total", reason="ping_timeout") == 1
    assert metric(server, "nane_open_connections") == 1
    figure(f"vanished_client[{mode}]", detected_s=round(detected, 2), ping_interval_s=1,
           ping_timeout_s=1, quiet_client_pings_answered=len(pings))


@pytest.mark.parametrize("mode", ALL_MODES)
def test_a_connection_that_never_finishes_its_request_is_dropped(start_server, mode):
    server = start_server(mode, http_idle_timeout_seconds=1)
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    trickle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    trickle.sendall(b"GET /api/rooms HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    for sock in (silent, trickle):
        sock.settimeout(15)  # dropped after 1 s; the default would hold it for 75 s
        try:
            assert sock.recv(4096) == b""
        except ConnectionResetError:
            pass
    assert server.get("/api/rooms")["result"] == []  # and the server serves others as before


@pytest.mark.parametrize("mode", ALL_MODES)
def test_a_websocket_outlives_the_http_request_deadline(start_server, mode):
    """The /ws view lifts the request deadline once upgraded, in every run mode."""
    server = start_server(mode, http_idle_timeout_seconds=1)
    ws = server.connect("long-lived")
    time.sleep(2.5)  # the time passing is what is tested: the deadline was 1 s
    send(ws, room="r", text="still here")
    assert receive(ws)["text"] == "still here"


# -- abuse limits ----------------------------------------------------------------

def test_a_flood_is_dropped_with_an_error_frame_then_closed_1008(server_with_flood_limits):
    server = server_with_flood_limits
    bystander = server.connect("bystander")
    flooder = server.connect("flooder", query="v=2")
    burst = 5 * 5  # five seconds' worth of 5 per second
    for i in range(burst):
        send(flooder, room="r", text=f"ok {i}", id=f"m{i}")
    for i in range(burst):  # a full bucket takes the whole burst
        assert receive(flooder)["id"] == f"m{i}"
    # Past the burst, frames are dropped with an error frame. A token comes back every
    # 200 ms, so on a slow machine one may pass first; a drop must come all the same.
    for i in range(100):
        send(flooder, room="r", text="one too many", id=f"over{i}")
        answer = receive(flooder)
        if "error" in answer:
            assert answer == {"error": "too many messages: at most 5 per second", "id": f"over{i}"}
            break
        assert answer["id"] == f"over{i}"
    else:
        raise AssertionError("100 frames past the burst and none was dropped")
    # keep flooding: after max_flood_seconds (1) of drops in a row the server closes 1008
    flooder.settimeout(0.05)
    started, code, sent = time.monotonic(), None, burst + 1
    while time.monotonic() - started < 6 and code is None:
        try:
            send(flooder, room="r", text="flood")
            sent += 1
            opcode, data = flooder.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big")
        except websocket.WebSocketTimeoutException:
            pass
        except (websocket.WebSocketConnectionClosedException, BrokenPipeError,
                ConnectionResetError):
            break
    assert code == 1008
    send(bystander, room="r", text="unharmed")
    texts = []
    while not texts or texts[-1] != "unharmed":
        texts.append(receive(bystander)["text"])
    dropped = metric(server, "nane_messages_dropped_total", reason="rate_limited")
    assert dropped >= 1 and metric(server, "nane_disconnects_total", reason="flood") == 1
    figure("flood", frames_sent=sent, accepted=texts.count("flood") + burst,
           dropped=int(dropped), closed_with=str(code))


def test_a_frame_is_charged_by_its_length_and_dropped_unparsed(start_server):
    """A frame costs one message per started 4,096 characters; a rate-limited frame longer
    than 1,024 characters is not parsed, so its error frame carries no `id` (docs/protocol.md)."""
    guard = FloodGuard(per_second=5, max_flood_seconds=1)  # a bucket of 25
    assert [cost_of(n) for n in (0, 4096, 4097, 125_000)] == [1, 1, 2, 31]
    assert guard.admit(0.0, 20 * 4096) and not guard.admit(0.0, 6 * 4096)
    assert guard.admit(0.0, 5 * 4096)  # the 5 tokens left
    guard.dropped(1.0)
    guard.dropped(2.5)
    assert guard.flooding  # drops in three seconds in a row (0, 1, 2), one more than allowed

    server = start_server(max_messages_per_second=5, max_flood_seconds=100)
    client = server.connect("long", query="v=2")
    send(client, room="r", text="x" * 100_000, id="big")  # 25 messages' worth: the whole burst
    assert receive(client)["id"] == "big"
    send(client, room="r", text="y" * 100_000, id="again")  # needs a full bucket: 5 s away
    assert receive(client) == {"error": "too many messages: at most 5 per second"}


@pytest.fixture
def server_with_flood_limits(start_server):
    return start_server(max_messages_per_second=5, max_flood_seconds=1)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_max_connections_refuses_with_503_before_the_upgrade(start_server, mode):
    server = start_server(mode, max_connections=3)
    clients = [server.connect(f"c{i}") for i in range(3)]
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        server.connect("one-too-many")
    assert refused.value.status_code == 503
    assert json.loads(refused.value.resp_body) == {"error": "server full, try again later"}
    clients.pop().close()
    wait_for(lambda: metric(server, "nane_open_connections") == 2, what="the slot to free")
    again = server.connect("now-there-is-room")
    send(again, room="r", text="in")
    assert receive(again)["text"] == "in"
    assert metric(server, "nane_connections_refused_total", reason="full") == 1


def test_a_bare_geventwebsocket_worker_closes_1013_when_full(tmp_path):
    """Without gunicorn.conf.py the worker upgrades before the app runs: then 1013."""
    import sys

    from tests.conftest import MODES, Server
    from tests.ports import free_port
    port = free_port()
    MODES["bare-geventwebsocket"] = lambda p: [
        sys.executable, "-m", "gunicorn", "-c", "/dev/null", "-k",
        "geventwebsocket.gunicorn.workers.GeventWebSocketWorker", "-b", f"127.0.0.1:{p}",
        "app.wsgi:app"]
    server = Server("bare-geventwebsocket", port, {"max_connections": 1}, tmp_path)
    try:
        first = server.connect("first")
        second = server.connect("second")
        assert receive_close(second) == (1013, "server full, try again later")
        send(first, room="r", text="unaffected")
        assert receive(first)["text"] == "unaffected"
    finally:
        MODES.pop("bare-geventwebsocket")
        server.stop()


# -- health, readiness, metrics, settings -------------------------------------

@pytest.mark.parametrize("mode", ALL_MODES)
def test_health_readiness_and_metrics(start_server, mode):
    server = start_server(mode)
    for path, expected in (("/healthz", {"status": "ok"}),
                           ("/readyz", {"status": "ready", "checks": ["hub", "registry"]})):
        status, headers, body = server.request(path)
        assert status == 200 and headers["Content-Type"] == "application/json; charset=utf-8"
        assert json.loads(body) == {"result": expected}
    a, b = server.connect("a"), server.connect("b", query="v=2")
    send(a, room="Lobby", text="hello")
    receive(a), receive(b)
    b.send("{broken")
    assert receive(b) == {"error": "invalid JSON"}
    status, headers, _ = server.request("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = scrape(server)
    value = lambda name, **labels: samples.get((name, tuple(sorted(labels.items()))))  # noqa: E731
    assert value("nane_open_connections") == 2
    assert value("nane_connections_total") == 2
    assert value("nane_rooms") == 1
    assert value("nane_messages_received_total") == 2
    assert value("nane_messages_delivered_total") == 2
    assert value("nane_messages_dropped_total", reason="invalid_json") == 1
    assert value("nane_fan_out_seconds_count") == 1
    assert value("nane_mailbox_messages", actor="hub") is not None
    assert value("nane_outbox_messages_max") is not None
    assert value("process_resident_memory_bytes") > 0
    for name, _ in samples:  # Prometheus naming: our prefix, counters end in _total
        assert name.startswith(("nane_", "process_", "python_")), name


def test_settings_list_every_limit_as_an_integer(start_server):
    server = start_server(max_connections=7, ping_interval_seconds=3)
    settings = server.get("/api/settings")["result"]
    for key in ("max_connections", "max_messages_per_second", "max_flood_seconds",
                "ping_interval_seconds", "ping_timeout_seconds", "http_idle_timeout_seconds",
                "shutdown_grace_seconds", "max_outbox_bytes"):
        assert isinstance(settings[key], int), key
    assert settings["max_connections"] == 7 and settings["ping_interval_seconds"] == 3
    assert all(isinstance(value, int) for value in settings.values())


def test_readyz_asks_redis_when_rooms_are_shared(start_server, redis_server):  # noqa: F811
    server = start_server(redis_url=redis_server.url)
    assert server.get("/readyz")["result"]["checks"] == ["hub", "redis", "registry"]
    redis_server.kill()
    status, _, body = server.request("/readyz")
    assert status == 503 and json.loads(body)["error"].startswith("not ready: redis")
    assert server.get("/healthz") == {"result": {"status": "ok"}}  # alive, just not ready
