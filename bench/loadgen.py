"""A cheap websocket load generator: one epoll loop, raw sockets.

Most connections are *counters*: they recv() up to 256 KiB at a time into one
shared buffer and only walk the frame headers to count complete messages (and
answer protocol pings), never touching the payload. A few connections are
*probes*: they assemble whole frames and hand the payload to a callback, which
parses the JSON to measure latency and check order.

The handshake and the frames are nane's own codec, client side (tests/wsframes.py):
counters use its `FrameParser(keep_data=False)`,
which walks headers and skips payloads without copying them, so the
generator's CPU per received frame stays far below a Python server's, which
is the point (see `gen_cpu_us_per_frame` in scenarios.py).

Every wait is bounded: LoadGen.loop() takes a deadline and a stall timeout and
returns False instead of hanging; the caller then reports what it counted as
loss.
"""
import errno
import json
import select
import socket
import time

from app.websocket.codec import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT
from tests.wsframes import FrameParser, client_frame, handshake_answer, handshake_request

RECV_SIZE = 256 * 1024

CONNECTING, HANDSHAKE, OPEN, CLOSED = range(4)

_EV_R = select.EPOLLIN
_EV_W = select.EPOLLOUT
_EV_RX = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR


def json_frame(obj):
    """A chat message as a masked client text frame."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return client_frame(OP_TEXT, text.encode("utf-8"))


def percentile(sorted_vals, p):
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


class Conn:
    __slots__ = ("g", "sock", "fd", "state", "idx", "probe", "on_msg", "hs",
                 "parser", "count", "outbuf", "events", "user",
                 "in_cep")

    def __init__(self, g, idx, probe, on_msg):
        self.g = g
        self.idx = idx
        self.probe = probe
        self.on_msg = on_msg  # probe callback(conn, payload_bytes, recv_ns)
        self.state = CONNECTING
        self.hs = b""
        self.parser = FrameParser(keep_data=probe)  # counters skip payloads
        self.count = 0  # complete data frames (messages) received
        self.outbuf = b""
        self.events = 0
        self.in_cep = False
        self.user = None  # free slot for scenarios

    def send(self, data):
        if self.state == CLOSED:
            return
        if self.outbuf:
            self.outbuf += data
            return
        try:
            k = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            k = 0
        except OSError:
            self.g._close(self, unexpected=True)
            return
        if k < len(data):
            self.outbuf = data[k:]
            self.g._want(self, _EV_W if self.in_cep else _EV_R | _EV_W)


class LoadGen:
    def __init__(self, host, port, path="/ws"):
        self.host, self.port, self.path = host, port, path
        self.ep = select.epoll()    # probes, connects, pending writes
        self.fdmap = {}
        # Open counter connections live in their own epoll set, drained every
        # `drain_interval` seconds (0: as soon as they are readable). Letting
        # frames pile up in the kernel for a few ms turns one recv per frame
        # into one recv per several frames: the "large reads" that keep the
        # generator cheap. Probes are still read the moment data arrives, and
        # between drain chunks, so latency figures do not wait for a drain.
        self.cep = select.epoll()
        self.cmap = {}
        self.drain_interval = 0.0
        self._next_drain = 0.0
        self._cep_in_ep = False
        self.last_probe_ns = 0      # monotonic ns of the last probe data frame
        self.buf = bytearray(RECV_SIZE)
        self.mv = memoryview(self.buf)
        self.conns = []
        self.rx_frames = 0          # data frames received, all connections
        self.last_rx_ns = 0         # monotonic ns of the last recv that completed a frame
        self.last_progress = time.monotonic()
        self.n_open = 0
        self.connect_failures = 0
        self.fail_reasons = {}      # why connections failed to open: reason -> count
        self.unexpected_closes = 0
        self.pending = 0            # connections still connecting / handshaking

    # ---- connection management -------------------------------------------
    def _want(self, c, events):
        if events == c.events:
            return
        if c.events == 0:
            self.ep.register(c.fd, events)
            self.fdmap[c.fd] = c
        elif events == 0:
            self.ep.unregister(c.fd)
            del self.fdmap[c.fd]
        else:
            self.ep.modify(c.fd, events)
        c.events = events

    def _fail(self, reason):
        """Count a connection that did not open, and why (errno name, HTTP status,
        timeout): a scenario that reaches fewer connections than asked says why."""
        self.connect_failures += 1
        self.fail_reasons[reason] = self.fail_reasons.get(reason, 0) + 1

    def _start(self, c, username):
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as e:  # EMFILE / ENFILE: this process's file limit
            self._fail("socket: " + errno.errorcode.get(e.errno, str(e.errno)))
            c.state = CLOSED
            return
        s.setblocking(False)
        c.sock, c.fd = s, s.fileno()
        c.outbuf = handshake_request(f"{self.path}?username={username}", f"{self.host}:{self.port}")
        err = s.connect_ex((self.host, self.port))
        if err not in (0, errno.EINPROGRESS):
            self._fail("connect: " + errno.errorcode.get(err, str(err)))
            c.state = CLOSED
            s.close()
            return
        self.pending += 1
        self._want(c, _EV_W)

    def open(self, n, probes=0, on_msg=None, prefix="u", concurrency=256, timeout=60.0):
        """Open n websocket connections; `probes` of them (spread evenly) are
        probes calling on_msg. Returns the list of connections that opened."""
        every = max(1, n // probes) if probes else 0
        new = []
        base = len(self.conns)
        nprobes = 0
        for i in range(n):
            probe = bool(every) and i % every == 0 and nprobes < probes
            nprobes += probe
            c = Conn(self, base + i, probe, on_msg if probe else None)
            new.append(c)
        self.conns.extend(new)
        todo = list(reversed(new))
        deadline = time.monotonic() + timeout
        while (todo or self.pending) and time.monotonic() < deadline:
            while todo and self.pending < concurrency:
                c = todo.pop()
                self._start(c, "%s%d" % (prefix, c.idx))
            self._poll(0.05)
            if self.cmap and time.monotonic() >= self._next_drain:
                # Connections already open must answer the server's pings while
                # the rest open: thousands of handshakes can outlast a ping timeout.
                self._next_drain = time.monotonic() + max(self.drain_interval, 0.05)
                self._drain()
        for c in todo:  # never started: the deadline came first
            c.state = CLOSED
            self._fail("not started within %.0f s" % timeout)
        for c in new:
            if c.state != OPEN and c.state != CLOSED:
                self._fail("not open within %.0f s" % timeout)
                self._close(c)
        return [c for c in new if c.state == OPEN]

    def _close(self, c, unexpected=False):
        if c.state == CLOSED:
            return
        if c.state in (CONNECTING, HANDSHAKE):
            self.pending -= 1
        elif c.state == OPEN:
            self.n_open -= 1
            if unexpected:
                self.unexpected_closes += 1
        c.state = CLOSED
        try:
            self._want(c, 0)
        except (KeyError, ValueError, OSError):
            pass
        if c.in_cep:
            c.in_cep = False
            self.cmap.pop(c.fd, None)
            try:
                self.cep.unregister(c.fd)
            except OSError:
                pass
        c.sock.close()

    def close_all(self):
        for c in self.conns:
            if c.state != CLOSED:
                self._close(c)
        self.conns = []
        self.cep.close()
        self.ep.close()

    # ---- the loop ----------------------------------------------------------
    def _poll(self, timeout):
        """One epoll round over probes / connects / pending writes; counter
        connections are read here too when drain_interval is 0."""
        immediate = self.drain_interval <= 0
        if immediate != self._cep_in_ep:  # wake on counters only when immediate
            if immediate:
                self.ep.register(self.cep.fileno(), _EV_R)
            else:
                self.ep.unregister(self.cep.fileno())
            self._cep_in_ep = immediate
        events = self.ep.poll(timeout, 8192)
        fdmap = self.fdmap
        cep_fd = self.cep.fileno()
        drain = False
        for fd, ev in events:
            c = fdmap.get(fd)
            if c is None:
                drain = drain or fd == cep_fd
                continue
            if ev & _EV_W:
                self._on_writable(c)
            if ev & _EV_RX and c.state != CLOSED:
                self._on_readable(c)
        if drain:
            self._drain()

    def _drain(self, chunk=512):
        """Read every readable counter connection: one recv_into per socket
        into the shared buffer, then a header walk. Clocks are read once per
        chunk, not per socket; probes are served between chunks."""
        cep, cmap, buf, mv, walk = self.cep, self.cmap, self.buf, self.mv, self._walk
        rounds = len(cmap) // chunk + 2
        while rounds > 0:
            rounds -= 1
            events = cep.poll(0, chunk)
            counted = 0
            for fd, _event in events:
                c = cmap.get(fd)
                if c is None or c.state == CLOSED:
                    continue
                try:
                    n = c.sock.recv_into(buf)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    n = 0
                if n == 0:
                    self._close(c, unexpected=True)
                    continue
                counted += walk(c, mv[:n])
            if counted:
                self.rx_frames += counted
                self.last_rx_ns = time.monotonic_ns()
                self.last_progress = time.monotonic()
            if len(events) < chunk:
                break
            self._poll_probes()

    def _poll_probes(self):
        for fd, ev in self.ep.poll(0, 8192):
            c = self.fdmap.get(fd)
            if c is None:
                continue
            if ev & _EV_W:
                self._on_writable(c)
            if ev & _EV_RX and c.state != CLOSED:
                self._on_readable(c)

    def loop(self, until, timeout, stall=10.0, tick=None):
        """Run until until() is true (returns True), or the deadline or a stall
        of `stall` seconds without progress (returns False). tick(), when
        given, is called every iteration and returns the seconds until it next
        wants to run."""
        deadline = time.monotonic() + timeout
        self.last_progress = time.monotonic()
        while True:
            if until():
                return True
            now = time.monotonic()
            if now >= deadline or now - self.last_progress > stall:
                return False
            t = min(deadline - now, 0.05)
            if self.drain_interval > 0 and self.cmap:
                if now >= self._next_drain:
                    self._next_drain = now + self.drain_interval
                    self._drain()
                    continue
                t = min(t, self._next_drain - now)
            if tick is not None:
                t = min(t, tick())
            self._poll(max(0.0, t))

    def _on_writable(self, c):
        if c.state == CONNECTING:
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._fail("connect: " + errno.errorcode.get(err, str(err)))
                self._close(c)
                return
            c.state = HANDSHAKE
        data = c.outbuf
        if data:
            try:
                k = c.sock.send(data)
            except (BlockingIOError, InterruptedError):
                k = 0
            except OSError:
                self._close(c, unexpected=True)
                return
            c.outbuf = data[k:]
        if not c.outbuf:
            self._want(c, 0 if c.in_cep else _EV_R)

    def _on_readable(self, c):
        try:
            n = c.sock.recv_into(self.buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = 0
        if n == 0:
            self._close(c, unexpected=True)
            return
        if c.state == HANDSHAKE:
            c.hs += self.buf[:n]
            try:
                answer = handshake_answer(c.hs)
            except ConnectionRefusedError as refused:
                answer, refusal = None, str(refused)
            else:
                refusal = None
            if answer is None and refusal is None:
                if len(c.hs) > 65536:
                    self._fail("handshake: response head too long")
                    self._close(c)
                return
            c.hs = b""
            if answer is None:
                self._fail(f"handshake: {refusal}"[:80])
                self.pending -= 1
                c.state = OPEN  # so _close accounts it as open->closed below
                self.n_open += 1
                self._close(c)
                return
            self.pending -= 1
            self.n_open += 1
            c.state = OPEN
            self.last_progress = time.monotonic()
            if not c.probe:
                if not c.outbuf:
                    self._want(c, 0)
                self.cep.register(c.fd, _EV_R)
                self.cmap[c.fd] = c
                c.in_cep = True
            if answer[1]:
                self._feed(c, answer[1])
            return
        self._feed(c, self.mv[:n])

    def _feed(self, c, data):
        if c.probe:
            self._parse_probe(c, data)
        else:
            cnt = self._walk(c, data)
            if cnt:
                self.rx_frames += cnt
                self.last_rx_ns = time.monotonic_ns()
                self.last_progress = time.monotonic()

    def _walk(self, c, data):
        """Count the data frames that end a message (payloads skipped, not
        read); returns the count (the caller adds it to rx_frames)."""
        cnt = 0
        for fin, op, payload in c.parser.feed(data):
            if op >= 8:  # control frames come whole
                self._control(c, op, payload)
                if c.state == CLOSED:
                    break
            elif fin:
                cnt += 1
        c.count += cnt
        return cnt

    def _parse_probe(self, c, data):
        now = None
        frames = c.parser.feed(data)
        for _fin, op, payload in frames:
            if op >= 8:
                self._control(c, op, payload)
                if c.state == CLOSED:
                    return
                continue
            if now is None:
                now = time.monotonic_ns()
            c.count += 1
            self.rx_frames += 1
            self.last_rx_ns = self.last_probe_ns = now
            if c.on_msg is not None and op == OP_TEXT:
                c.on_msg(c, payload, now)
        if frames:
            self.last_progress = time.monotonic()

    def _control(self, c, op, payload):
        if op == OP_PING:
            c.send(client_frame(OP_PONG, payload))
        elif op == OP_CLOSE:  # close from the server
            self._close(c, unexpected=True)

    # ---- measuring ourselves ----------------------------------------------
    @staticmethod
    def cpu():
        return time.process_time()


def barrier(g, sender, conns, timeout=20.0, room="bench"):
    """Send one message and wait until every connection in `conns` has
    received it: proves the server has registered them all. Resets counts.
    Returns the number of connections that did not get it."""
    for c in conns:
        c.count = 0
    g.rx_frames = 0
    sender.send(json_frame({"room": room, "text": "w barrier"}))
    target = len(conns)
    g.loop(lambda: g.rx_frames >= target, timeout, stall=timeout)
    missing = sum(1 for c in conns if c.count < 1)
    for c in conns:
        c.count = 0
    g.rx_frames = 0
    return missing


def kernel_counters():
    """Loopback health: packets the kernel dropped from its per-CPU input
    backlog (/proc/net/softnet_stat, 2nd column) and TCP segments
    retransmitted (/proc/net/snmp). Either one rising during a scenario means
    its latency figures include 200 ms+ retransmission stalls."""
    drops = retrans = 0
    try:
        with open("/proc/net/softnet_stat") as f:
            drops = sum(int(line.split()[1], 16) for line in f)
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Tcp:")]
        retrans = int(rows[1][rows[0].index("RetransSegs")])
    except (OSError, ValueError, IndexError):
        pass
    return drops, retrans
