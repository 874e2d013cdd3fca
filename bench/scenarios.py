"""Benchmark scenarios. Each is a function (host, port, ..., server=...) that
returns a dict of figures; every figure dict also carries `loss`, `reorder`
and `gen_cpu_us_per_frame` where they apply, which run.py checks.

All traffic goes to the given host (run.py passes 127.0.0.1 only). Every
sending loop is bounded in count and in time; on a timeout a scenario returns
what it counted, and what did not arrive is loss.
"""
import gc
import json
import selectors
import socket
import time

from loadgen import LoadGen, barrier, json_frame, kernel_counters, percentile


def _ms(ns):
    return None if ns is None else ns / 1e6


# --------------------------------------------------------------------------
# broadcast: one sender, window of W messages in flight, all N receive all
# --------------------------------------------------------------------------
class _BroadcastPhase:
    def __init__(self, g, conns, sender, probes, messages, window, room="bench", server=None):
        self.g, self.conns, self.sender, self.probes = g, conns, sender, probes
        self.server = server
        self.M, self.W, self.room = messages, window, room
        self.P = len(probes)
        self.got = [0] * messages
        self.maxlat = [0] * messages
        self.reorder = 0
        self.created_errors = 0
        self.created_sample = None
        self.t_first = None
        for p in probes:
            p.user = [-1, ""]  # last seq, last created
            p.on_msg = self.on_msg

    def send(self, seq):
        t = time.monotonic_ns()
        if self.t_first is None:
            self.t_first = t
        self.sender.send(json_frame({"room": self.room, "text": "b %d %d" % (seq, t)}))

    def on_msg(self, c, payload, now):
        d = json.loads(payload)
        text = d.get("text") if isinstance(d, dict) else None
        if not isinstance(text, str) or not text.startswith("b "):
            return
        _, seq, t = text.split()
        seq, t = int(seq), int(t)
        u = c.user
        if seq <= u[0]:
            self.reorder += 1
        else:
            u[0] = seq
        created = d.get("created") or ""
        if created <= u[1]:
            self.created_errors += 1
            if self.created_sample is None:
                self.created_sample = "conn %d got created %s after %s" % (c.idx, created, u[1])
        else:
            u[1] = created
        if seq >= self.M:
            return
        lat = now - t
        if lat > self.maxlat[seq]:
            self.maxlat[seq] = lat
        self.got[seq] += 1
        if c is self.sender and seq + self.W < self.M:
            self.send(seq + self.W)

    def run(self, timeout, stall=10.0):
        g = self.g
        for c in self.conns:
            c.count = 0
        g.rx_frames = 0
        expected = len(self.conns) * self.M
        cpu0 = time.process_time()
        scpu0 = _server_cpu(self.server)
        gc.disable()
        try:
            for seq in range(min(self.W, self.M)):
                self.send(seq)
            done = g.loop(lambda: g.rx_frames >= expected, timeout, stall=stall)
        finally:
            gc.enable()
        cpu = time.process_time() - cpu0
        scpu = _server_cpu(self.server)
        rx = g.rx_frames
        # Counters are read in drain rounds, so their clock is coarse; the
        # probes (spread over the connection order) are read at once, and the
        # last of them to get the last message closes the fan-out.
        end = g.last_probe_ns if done else g.last_rx_ns
        elapsed = max(1e-9, (end - self.t_first) / 1e9) if rx else None
        lats = sorted(self.maxlat[s] for s in range(self.M) if self.got[s] == self.P)
        return {
            "clients": len(self.conns),
            "messages": self.M,
            "frames_per_s": rx / elapsed if elapsed else 0.0,
            "fanout_p50_ms": _ms(percentile(lats, 50)),
            "fanout_p95_ms": _ms(percentile(lats, 95)),
            "fanout_p99_ms": _ms(percentile(lats, 99)),
            "loss": max(0, expected - rx),
            "extra_frames": max(0, rx - expected),
            "reorder": self.reorder,
            "created_disorder": self.created_errors,
            "created_sample": self.created_sample,
            "completed": done,
            "gen_cpu_us_per_frame": cpu / rx * 1e6 if rx else None,
            "server_cpu_us_per_frame": (scpu - scpu0) / rx * 1e6 if rx and scpu is not None else None,
        }


def _server_cpu(server):
    try:
        return server.cpu() if server is not None else None
    except Exception:  # noqa: BLE001 - the server may be gone; figures say so
        return None


DRAIN_OVERRIDE = None  # seconds; run.py --drain-ms sets it (0: read at once)


def drain_interval(n):
    """How long counters let frames pile up between reads: about 4 frames
    per connection at ~200k frames/s, 5..200 ms."""
    if DRAIN_OVERRIDE is not None:
        return DRAIN_OVERRIDE
    return min(0.2, max(0.005, n / 50000.0))


def _setup_broadcast(g, n, probes):
    conns = g.open(n, probes=probes, prefix="b")
    ps = [c for c in conns if c.probe]
    if not ps:
        raise RuntimeError("no probe connection opened (%d of %d open)" % (len(conns), n))
    return conns, ps


def broadcast(host, port, clients=1000, messages=1000, window=4, probes=10,
              timeout=180.0, server=None):
    g = LoadGen(host, port)
    g.drain_interval = drain_interval(clients)
    try:
        conns, ps = _setup_broadcast(g, clients, probes)
        missing = barrier(g, ps[0], conns)
        res = _BroadcastPhase(g, conns, ps[0], ps, messages, window, server=server).run(timeout)
        res["connect_failures"] = g.connect_failures + (clients - len(conns))
        res["barrier_missing"] = missing
        res["loss"] += res["connect_failures"] * messages
        res["disconnects"] = g.unexpected_closes
        return res
    finally:
        g.close_all()


# --------------------------------------------------------------------------
# capacity: grow N by `step` until p95 fan-out exceeds the limit
# --------------------------------------------------------------------------
def capacity(host, port, step=1000, max_clients=10000, messages=200, window=4,
             probes=10, limit_ms=250.0, budget_s=420.0, server=None):
    """Largest N (a multiple of `step`) whose broadcast p95 fan-out stays
    within limit_ms with no loss. The step that fails is reported as the stop
    reason; loss there is where the server gave out, shown as loss_at_stop."""
    g = LoadGen(host, port)
    t_end = time.monotonic() + budget_s
    conns, steps = [], []
    best, best_p95 = 0, None
    reorder = disorder = 0
    loss_at_stop = 0
    stop = "max_clients"
    cpu_us = []
    try:
        while len(conns) + step <= max_clients:
            if time.monotonic() >= t_end:
                stop = "time_budget"
                break
            new = g.open(step, probes=max(1, probes // 2), prefix="c%d_" % len(conns))
            conns.extend(new)
            g.drain_interval = drain_interval(len(conns))
            ps = [c for c in conns if c.probe]
            missing = barrier(g, ps[0], conns)
            left = max(10.0, t_end - time.monotonic())
            r = _BroadcastPhase(g, conns, ps[0], ps, messages, window,
                                server=server).run(min(left, 120.0))
            lost = r["loss"] + (step - len(new)) * messages
            steps.append({"clients": len(conns), "p95_ms": r["fanout_p95_ms"],
                          "frames_per_s": r["frames_per_s"], "loss": lost,
                          "barrier_missing": missing})
            reorder += r["reorder"]
            disorder += r["created_disorder"]
            if r["gen_cpu_us_per_frame"]:
                cpu_us.append(r["gen_cpu_us_per_frame"])
            if lost or len(new) < step:
                loss_at_stop, stop = lost, "loss"
                break
            if r["fanout_p95_ms"] is None or r["fanout_p95_ms"] > limit_ms:
                stop = "p95"
                break
            best, best_p95 = len(conns), r["fanout_p95_ms"]
        return {"capacity_clients": best, "capacity_p95_ms": best_p95,
                "capacity_stop": stop, "loss_at_stop": loss_at_stop,
                "loss": 0, "reorder": reorder, "created_disorder": disorder,
                "steps": steps,
                "gen_cpu_us_per_frame": max(cpu_us) if cpu_us else None}
    finally:
        g.close_all()


# --------------------------------------------------------------------------
# idle: N open connections, server RSS per connection
# --------------------------------------------------------------------------
def idle(host, port, clients=5000, hold_s=3.0, server=None):
    rss = server.rss if server is not None else None
    g = LoadGen(host, port)
    g.drain_interval = 0.05
    try:
        # Warm the server up with one connection and one message first, so the
        # "before" figure includes lazily imported code and caches.
        warm = g.open(1, probes=1, prefix="w")
        barrier(g, warm[0], warm)
        g.loop(lambda: False, 0.5)
        rss0 = rss() if rss else None
        conns = g.open(clients, prefix="i")
        missing = barrier(g, warm[0], warm + conns)
        g.loop(lambda: False, hold_s)  # hold them, answering pings
        rss1 = rss() if rss else None
        # all still there? one more message must reach every one of them
        everyone = warm + conns
        for c in everyone:
            c.count = 0
        g.rx_frames = 0
        warm[0].send(json_frame({"room": "bench", "text": "w idle check"}))
        g.loop(lambda: g.rx_frames >= len(everyone), 30.0)
        got = sum(1 for c in everyone if c.count >= 1)
        failures = g.connect_failures + (clients - len(conns))
        return {
            "idle_clients": len(conns),
            "rss_before_mib": rss0 / 2**20 if rss else None,
            "rss_after_mib": rss1 / 2**20 if rss else None,
            "rss_per_conn_kib": (rss1 - rss0) / 1024 / max(1, len(conns)) if rss else None,
            "connect_failures": failures,
            "barrier_missing": missing,
            "loss": (len(everyone) - got) + failures,
            "disconnects": g.unexpected_closes,
            "reorder": 0,
        }
    finally:
        g.close_all()


# --------------------------------------------------------------------------
# chat: C clients, each sending R msg/s into one of K rooms; all receive all
# --------------------------------------------------------------------------
def chat(host, port, clients=50, rate=2.0, rooms=10, duration_s=10.0, server=None):
    g = LoadGen(host, port)
    try:
        conns = g.open(clients, probes=clients, prefix="chat")
        n = len(conns)
        if n == 0:
            raise RuntimeError("no chat connection opened")
        missing = barrier(g, conns[0], conns)
        lats = []
        stats = {"reorder": 0, "created": 0, "gaps": 0, "sample": None}
        for c in conns:
            c.user = ([-1] * n, [""])

        def on_msg(c, payload, now):
            d = json.loads(payload)
            text = d.get("text") if isinstance(d, dict) else None
            if not isinstance(text, str) or not text.startswith("c "):
                return
            _, s, seq, t = text.split()
            s, seq = int(s), int(seq)
            last, cr = c.user
            if seq <= last[s]:
                stats["reorder"] += 1
                if stats["sample"] is None:
                    stats["sample"] = "conn %d got seq %d of sender %d after %d" % (
                        c.idx, seq, s, last[s])
            else:
                if seq != last[s] + 1:
                    stats["gaps"] += 1
                last[s] = seq
            created = d.get("created") or ""
            if created <= cr[0]:
                stats["created"] += 1
                if stats["sample"] is None:
                    stats["sample"] = "conn %d got created %s (%s) after %s" % (
                        c.idx, created, text, cr[0])
            else:
                cr[0] = created
            lats.append(now - int(t))

        for c in conns:
            c.on_msg = on_msg
        total = int(duration_s * n * rate)
        interval_ns = int(1e9 / (n * rate))
        state = {"k": 0}
        t0 = time.monotonic_ns() + 10_000_000

        def tick():
            now = time.monotonic_ns()
            k = state["k"]
            while k < total and now >= t0 + k * interval_ns:
                i = k % n
                conns[i].send(json_frame({"room": "chat-%d" % (i % rooms),
                                          "text": "c %d %d %d" % (i, k // n, time.monotonic_ns())}))
                k += 1
            state["k"] = k
            if k >= total:
                return 0.05
            return max(0.0, (t0 + k * interval_ns - time.monotonic_ns()) / 1e9)

        for c in conns:
            c.count = 0
        g.rx_frames = 0
        expected = total * n
        cpu0 = time.process_time()
        gc.disable()
        try:
            g.loop(lambda: state["k"] >= total and g.rx_frames >= expected,
                   duration_s + 30.0, stall=10.0, tick=tick)
        finally:
            gc.enable()
        cpu = time.process_time() - cpu0
        lats.sort()
        return {
            "chat_clients": n,
            "chat_messages": state["k"],
            "chat_p50_ms": _ms(percentile(lats, 50)),
            "chat_p95_ms": _ms(percentile(lats, 95)),
            "chat_p99_ms": _ms(percentile(lats, 99)),
            "chat_max_ms": _ms(lats[-1]) if lats else None,
            "loss": max(0, expected - g.rx_frames) + (clients - n) * total,
            "reorder": stats["reorder"],
            "created_disorder": stats["created"],
            "order_sample": stats["sample"],
            "barrier_missing": missing,
            "disconnects": g.unexpected_closes,
            "gen_cpu_us_per_frame": cpu / g.rx_frames * 1e6 if g.rx_frames else None,
        }
    finally:
        g.close_all()


# --------------------------------------------------------------------------
# http: keep-alive HTTP/1.1 clients on raw sockets
# --------------------------------------------------------------------------
def _post(g, c, items, window=64, timeout=60.0):
    """Send (room, text) items over connection c (the only one receiving),
    `window` in flight: each echo lets the next one go. Returns how many
    echoes came back and whether all did."""
    c.count = 0
    state = {"sent": 0}

    def pump():
        while state["sent"] < len(items) and state["sent"] - c.count < window:
            room, text = items[state["sent"]]
            c.send(json_frame({"room": room, "text": text}))
            state["sent"] += 1
        return 0.05

    done = g.loop(lambda: c.count >= len(items), timeout, stall=10.0, tick=pump)
    return c.count, done


def _prefill(host, port, items, window=64, timeout=60.0):
    """_post over a fresh websocket of its own. Returns how many echoes came back."""
    g = LoadGen(host, port)
    try:
        c = g.open(1, probes=1, prefix="fill")
        return _post(g, c[0], items, window, timeout)[0] if c else 0
    finally:
        g.close_all()


def _http_get_once(host, port, path, timeout=10.0):
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
                   % (path, host, port)).encode())
        data = b""
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            data += b
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out, rest = b"", body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            size = int(size.split(b";")[0], 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    return status, headers, body


class _HttpConn:
    __slots__ = ("sock", "buf", "t0", "n")


def _response_end(buf):
    """Index just past one complete response in buf, or -1; and whether the
    server said Connection: close."""
    he = buf.find(b"\r\n\r\n")
    if he < 0:
        return -1, False
    head = bytes(buf[:he]).lower()
    close = b"\nconnection: close" in head
    body = he + 4
    i = head.find(b"\ncontent-length:")
    if i >= 0:
        j = head.find(b"\r\n", i + 1)
        cl = int(head[i + 16:j if j >= 0 else len(head)])
        end = body + cl
        return (end if len(buf) >= end else -1), close
    if b"\ntransfer-encoding: chunked" in head:
        pos = body
        while True:
            le = buf.find(b"\r\n", pos)
            if le < 0:
                return -1, close
            size = int(bytes(buf[pos:le]).split(b";")[0], 16)
            pos = le + 2 + size + 2
            if size == 0:
                # no trailers expected
                return (pos if len(buf) >= pos else -1), close
            if len(buf) < pos:
                return -1, close
    return -1, True  # read until close (handled by caller)


def http_load(host, port, path, seconds=5.0, connections=4):
    req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (path, host, port)).encode()
    sel = selectors.EpollSelector()
    lats, errors, reconnects, statuses = [], 0, 0, {}
    conns = []

    def connect(h):
        s = socket.create_connection((host, port), timeout=5.0)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        h.sock, h.buf = s, bytearray()
        sel.register(s, selectors.EVENT_READ, h)

    def fire(h):
        h.t0 = time.monotonic_ns()
        h.sock.sendall(req)  # small; fits the socket buffer

    for _ in range(connections):
        h = _HttpConn()
        connect(h)
        conns.append(h)
    cpu0 = time.process_time()
    t_start = time.monotonic()
    deadline = t_start + seconds
    hard = deadline + 10.0
    outstanding = 0
    for h in conns:
        fire(h)
        outstanding += 1
    while outstanding and time.monotonic() < hard:
        for key, _ in sel.select(0.05):
            h = key.data
            try:
                b = h.sock.recv(262144)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                b = b""
            if b:
                h.buf += b
            end, close = _response_end(h.buf)
            if not b and end < 0:
                # the server closed: with a read-until-close response it is done
                he = h.buf.find(b"\r\n\r\n")
                if he >= 0:
                    end = len(h.buf)
                else:
                    errors += 1
                close = True
            if end >= 0:
                now = time.monotonic_ns()
                st = bytes(h.buf[9:12])
                statuses[st] = statuses.get(st, 0) + 1
                if st[:1] == b"2":
                    lats.append(now - h.t0)
                else:
                    errors += 1
                del h.buf[:end]
            if end >= 0 or not b:
                outstanding -= 1
                if close or not b:
                    sel.unregister(h.sock)
                    h.sock.close()
                    if time.monotonic() < deadline:
                        reconnects += 1
                        try:
                            connect(h)
                        except OSError:
                            errors += 1
                            continue
                if time.monotonic() < deadline and h.sock.fileno() >= 0:
                    fire(h)
                    outstanding += 1
    elapsed = time.monotonic() - t_start
    cpu = time.process_time() - cpu0
    for h in conns:
        try:
            sel.unregister(h.sock)
        except (KeyError, ValueError):
            pass
        h.sock.close()
    sel.close()
    lats.sort()
    return {"rps": len(lats) / elapsed, "p50_ms": _ms(percentile(lats, 50)),
            "p99_ms": _ms(percentile(lats, 99)), "errors": errors + outstanding,
            "reconnects": reconnects, "gen_cpu_s": cpu}


def http(host, port, seconds=5.0, connections=4, history_messages=1024, rooms=1000,
         server=None):
    filler = "lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor %05d"
    items = [("full", filler % i) for i in range(history_messages)]
    items += [("room-%04d" % i, "hello from room %d" % i) for i in range(rooms)]
    echoed = _prefill(host, port, items)
    out = {"prefill_lost": len(items) - echoed}
    # sanity: the endpoints answer what we think they do
    checks = {}
    for name, path in (("history", "/api/rooms/full/history"), ("rooms", "/api/rooms"),
                       ("settings", "/api/settings")):
        try:
            st, hd, body = _http_get_once(host, port, path)
            res = json.loads(body).get("result")
            checks[name] = (st, hd.get("content-type"),
                            len(res) if isinstance(res, list) else None, len(body))
        except Exception as e:  # noqa: BLE001 - report, do not crash the run
            checks[name] = ("error", repr(e), None, 0)
    out["history_len"] = checks["history"][2]
    out["rooms_len"] = checks["rooms"][2]
    out["history_bytes"] = checks["history"][3]
    out["rooms_bytes"] = checks["rooms"][3]
    cpu = 0.0
    nreq = 0
    errors = 0
    for name, path in (("history", "/api/rooms/full/history"), ("rooms", "/api/rooms"),
                       ("settings", "/api/settings")):
        r = http_load(host, port, path, seconds, connections)
        out[name + "_rps"] = r["rps"]
        out[name + "_p50_ms"] = r["p50_ms"]
        out[name + "_p99_ms"] = r["p99_ms"]
        out[name + "_reconnects"] = r["reconnects"]
        errors += r["errors"]
        cpu += r["gen_cpu_s"]
        nreq += int(r["rps"] * seconds)
    out["http_errors"] = errors
    # a history that answers fewer messages than were posted to it lost some (or the whole
    # room): that fails the run like any loss, instead of measuring the speed of a 404
    out["history_lost"] = history_messages - (out["history_len"] or 0)
    out["loss"] = out["prefill_lost"] + out["history_lost"]
    out["reorder"] = 0
    out["gen_cpu_us_per_request"] = cpu / nreq * 1e6 if nreq else None
    return out


# --------------------------------------------------------------------------
# rooms: many rooms of one message each, server RSS per room
# --------------------------------------------------------------------------
def _rss(server):
    try:
        return server.rss() if server is not None else None
    except Exception:  # noqa: BLE001 - the server may be gone; figures say so
        return None


def rooms(host, port, count=100000, window=64, history=1023, timeout=600.0, server=None):
    """Post one message into each of `count` new rooms over one websocket,
    `window` posts in flight (each echo lets the next post go).

    Room 0 is created with the warm-up, before any baseline, so the server
    holds exactly `count` rooms at the end (run.py sets NANE_MAX_ROOMS to
    `count`). First `history` more messages go into room 0: their RSS growth
    per message is what one message costs in a history. Then rooms 1..count-1:
    RSS growth / (count - 1) is what a room of one message costs, and the
    difference is the room's own cost beyond its message. Also: rooms/s
    (first post -> last echo), the mean JSON bytes of one message as the
    server sends it, and GET /api/rooms afterwards, which proves no room was
    forgotten by a room limit."""
    name = "room-%06d"
    g = LoadGen(host, port)
    try:
        warm = g.open(1, probes=1, prefix="rooms")
        if not warm:
            raise RuntimeError("no connection opened (%s)" % g.fail_reasons)
        c = warm[0]
        barrier(g, c, warm, room=name % 0)
        g.loop(lambda: False, 0.5)
        rss_a = _rss(server)
        filler = "lorem ipsum dolor sit amet, consectetur adipiscing elit %05d"
        hist_echoed, _ = _post(g, c, [(name % 0, filler % i) for i in range(history)],
                               window, min(timeout, 120.0))
        g.loop(lambda: False, 0.5)
        rss_b = _rss(server)
        items = count - 1
        stats = {"bytes": 0, "echoes": 0, "created": "", "disorder": 0, "sample": None}

        def on_msg(conn, payload, now):
            d = json.loads(payload)
            if not isinstance(d, dict) or not str(d.get("text", "")).startswith("r "):
                return
            stats["echoes"] += 1
            stats["bytes"] += len(payload)
            created = d.get("created") or ""
            if created <= stats["created"]:
                stats["disorder"] += 1
                if stats["sample"] is None:
                    stats["sample"] = "created %s after %s" % (created, stats["created"])
            else:
                stats["created"] = created

        c.on_msg = on_msg
        cpu0 = time.process_time()
        t_first = time.monotonic_ns()
        echoed, done = _post(g, c, [(name % i, "r hello from room %d" % i)
                                    for i in range(1, count)], window, timeout)
        t_last = g.last_probe_ns
        cpu = time.process_time() - cpu0
        g.loop(lambda: False, 1.0)  # let the server settle before reading RSS
        rss_c = _rss(server)
        msg_rss = (rss_b - rss_a) / max(1, history) if rss_a and rss_b else None
        per_room = (rss_c - rss_b) / 1024 / max(1, items) if rss_b and rss_c else None
        listed = None
        try:
            st, _, body = _http_get_once(host, port, "/api/rooms", timeout=60.0)
            res = json.loads(body).get("result")
            listed = len(res) if st == 200 and isinstance(res, list) else None
        except Exception:  # noqa: BLE001 - a figure, not the scenario's verdict
            pass
        return {
            "rooms": count,
            "rooms_echoed": echoed + 1,
            "rooms_listed": listed,
            "completed": done,
            "rooms_per_s": echoed / max(1e-9, (t_last - t_first) / 1e9) if echoed else 0.0,
            "rss_before_mib": rss_b / 2**20 if rss_b else None,
            "rss_after_mib": rss_c / 2**20 if rss_c else None,
            "rss_per_room_kib": per_room,
            "msg_bytes": stats["bytes"] / stats["echoes"] if stats["echoes"] else None,
            "msg_rss_bytes": msg_rss,
            "beyond_msg_kib": per_room - msg_rss / 1024
            if per_room is not None and msg_rss is not None else None,
            "loss": (items - echoed) + (history - hist_echoed),
            "reorder": 0,
            "created_disorder": stats["disorder"],
            "created_sample": stats["sample"],
            "disconnects": g.unexpected_closes,
            "gen_cpu_us_per_frame": cpu / echoed * 1e6 if echoed else None,
        }
    finally:
        g.close_all()


# --------------------------------------------------------------------------
# crowd: as many idle websockets as the file limits allow, then one broadcast
# --------------------------------------------------------------------------
def _ephemeral_ports():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return hi - lo + 1
    except (OSError, ValueError):
        return None


def crowd_size(server, headroom):
    """How many connections the machine allows: the smaller open-file limit of
    this process and the server's, and the ephemeral ports towards one server
    port, less `headroom` for everything else that needs a descriptor."""
    import resource
    limits = {"gen_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
              "server_nofile": server.nofile() if server is not None else None,
              "ephemeral_ports": _ephemeral_ports()}
    known = [v for v in limits.values() if v]
    return max(1, min(known) - headroom), limits


def crowd(host, port, clients=0, headroom=1000, hold_s=3.0, rounds=3, open_timeout=300.0,
          round_timeout=60.0, server=None):
    """Open `clients` silent websockets (0: as many as crowd_size allows), hold
    them, then broadcast one message at a time, `rounds` times: the time from
    the send until the last of them has it. Counters are read the moment data
    arrives here (no drain rounds), so the time is not rounded up to a drain.

    RSS per connection is the growth over the warm-up connection's baseline.
    Connections that did not open are reported with their reasons (errno,
    HTTP status, timeout); what opened is what the figures are for."""
    n, limits = crowd_size(server, headroom) if not clients else (clients, {})
    g = LoadGen(host, port)
    g.drain_interval = 0.05
    try:
        warm = g.open(1, probes=1, prefix="w")
        if not warm:
            raise RuntimeError("no connection opened (%s)" % g.fail_reasons)
        barrier(g, warm[0], warm)
        g.loop(lambda: False, 0.5)
        rss0 = _rss(server)
        t0 = time.monotonic()
        conns = g.open(n - 1, prefix="crowd", timeout=open_timeout)
        open_s = time.monotonic() - t0
        everyone = warm + conns
        missing = barrier(g, warm[0], everyone, timeout=round_timeout)
        g.loop(lambda: False, hold_s)  # hold them, answering pings
        rss1 = _rss(server)
        g.drain_interval = 0.0
        lats, loss = [], 0
        cpu0 = time.process_time()
        k0 = kernel_counters()
        rx = 0
        for r in range(rounds):
            for c in everyone:
                c.count = 0
            g.rx_frames = 0
            t = time.monotonic_ns()
            warm[0].send(json_frame({"room": "bench", "text": "w crowd %d" % r}))
            done = g.loop(lambda: g.rx_frames >= len(everyone), round_timeout, stall=10.0)
            rx += g.rx_frames
            got = sum(1 for c in everyone if c.count >= 1)
            loss += len(everyone) - got
            if done:
                lats.append(g.last_rx_ns - t)
        cpu = time.process_time() - cpu0
        k1 = kernel_counters()
        held = len(everyone) - g.unexpected_closes
        rounds_ms = [round(x / 1e6, 1) for x in lats]  # in the order they ran
        lats.sort()
        return dict(limits, **{
            "crowd_asked": n,
            "crowd_clients": len(everyone),
            "crowd_open_s": open_s,
            "crowd_opened_per_s": len(conns) / open_s if open_s else None,
            "connect_failures": g.connect_failures,
            "fail_reasons": g.fail_reasons,
            "rss_before_mib": rss0 / 2**20 if rss0 else None,
            "rss_after_mib": rss1 / 2**20 if rss1 else None,
            "crowd_rss_per_conn_kib": (rss1 - rss0) / 1024 / max(1, len(conns))
            if rss0 and rss1 else None,
            "crowd_last_ms": _ms(lats[len(lats) // 2]) if lats else None,
            "crowd_last_ms_rounds": rounds_ms,
            # machine-wide, during the broadcasts only: retransmission stalls
            # (200 ms+) inside the figure, apart from those of the opening
            "rounds_kernel_drops": k1[0] - k0[0],
            "rounds_kernel_retrans": k1[1] - k0[1],
            "barrier_missing": missing,
            "held_at_end": held,
            "disconnects": g.unexpected_closes,
            "loss": loss,
            "reorder": 0,
            "gen_cpu_us_per_frame": cpu / rx * 1e6 if rx else None,
        })
    finally:
        g.close_all()
