#!/usr/bin/env python3
"""Run the nane benchmarks against nane and the two reference servers.

    python bench/run.py [--quick] [--runs 3] [--only broadcast,chat,...]
                        [--servers nane,nane-gunicorn,ref-gevent,ref-websockets]
                        [--before ../another-checkout]

Each (run, server, scenario) gets a fresh server subprocess on a free
127.0.0.1 port, pinned to CPU 1, while this process (the load generator) pins
itself to CPU 0. The table shows the median of the runs for each figure and
the ratio nane / better reference. With `--before DIR` another checkout of
nane runs beside this one (`python -m app` from DIR, as "nane-before") and a
column gives nane / nane-before. See bench/README.md.

Exit status: 1 on loss, reordering, a crashed or unstartable server, or a
scenario error; never because of a timing.
"""
import argparse
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(1, ROOT)  # the client codec (tests/wsframes.py) and tests/ports.py

import scenarios  # noqa: E402
from loadgen import kernel_counters  # noqa: E402

from tests.ports import free_port, upgrade  # noqa: E402

try:
    import psutil
except ImportError:  # RSS/CPU figures become n/a
    psutil = None

HOST = "127.0.0.1"  # never anything else
SERVER_CPU = 1
GEN_CPU = 0

SCENARIOS = ["broadcast", "capacity", "idle", "chat", "http", "rooms", "crowd"]

# nane's protective limits, lifted for a benchmark (both run modes read these;
# the references ignore them): one sender posts thousands of messages a
# second here, capacity goes past 10000 connections, all from one address. `--nane-args` can
# still override them for `python -m app`.
NANE_ENV = {
    "NANE_MAX_MESSAGES_PER_SECOND": "1000000",
    "NANE_MAX_FLOOD_SECONDS": "1000000",
    "NANE_MAX_CONNECTIONS": "15000",
    # every benchmark client comes from 127.0.0.1: one address
    "NANE_MAX_CONNECTIONS_PER_ADDRESS": "1000000",
    "NANE_MAX_MESSAGES_PER_SECOND_PER_ADDRESS": "1000000",
    # ... which also makes every room and holds every message: the fair shares of one
    # address (the http scenario's 1,001 rooms lost the history room to them)
    "NANE_MAX_ROOMS_PER_ADDRESS": "1000000",
    "NANE_MAX_HISTORY_BYTES_PER_ADDRESS": str(1 << 40),
    "NANE_MAX_SOCKETS_PER_ADDRESS": "1000000",
}


def scenario_env(scen, params):
    """Limits lifted for one scenario only: rooms holds `count` rooms (the
    default keeps 10000 and forgets the least recently active); crowd holds
    as many connections as the file limits allow, so the file limit, not
    nane's max_connections, is what stops it."""
    if scen == "rooms":
        return {"NANE_MAX_ROOMS": str(params["count"])}
    if scen == "crowd":
        return {"NANE_MAX_CONNECTIONS": "1000000"}
    return {}

FULL = {
    "broadcast": dict(clients=1000, messages=1000, window=4, probes=10),
    "capacity": dict(step=1000, max_clients=12000, messages=200, window=4, limit_ms=250.0,
                     budget_s=420.0),
    "idle": dict(clients=5000, hold_s=3.0),
    "chat": dict(clients=50, rate=2.0, rooms=10, duration_s=10.0),
    "http": dict(seconds=5.0, connections=4, history_messages=1024, rooms=1000),
    "rooms": dict(count=100000, window=64),
    "crowd": dict(clients=0, headroom=1000, hold_s=3.0, rounds=5),  # 0: as the limits allow
}
QUICK = {
    "broadcast": dict(clients=50, messages=50, window=4, probes=5, timeout=30.0),
    "capacity": dict(step=100, max_clients=200, messages=20, window=4, limit_ms=250.0,
                     budget_s=30.0),
    "idle": dict(clients=200, hold_s=0.5),
    "chat": dict(clients=10, rate=2.0, rooms=10, duration_s=2.0),
    "http": dict(seconds=1.0, connections=4, history_messages=1024, rooms=1000),
    "rooms": dict(count=2000, window=64, timeout=60.0),
    "crowd": dict(clients=500, hold_s=0.5, rounds=2, open_timeout=30.0, round_timeout=20.0),
}

# (scenario, key, label, higher_is_better, format)
FIGURES = [
    ("broadcast", "frames_per_s", "broadcast: delivered frames/s", True, "{:,.0f}"),
    ("broadcast", "fanout_p50_ms", "broadcast: fan-out p50 ms", False, "{:.1f}"),
    ("broadcast", "fanout_p95_ms", "broadcast: fan-out p95 ms", False, "{:.1f}"),
    ("broadcast", "fanout_p99_ms", "broadcast: fan-out p99 ms", False, "{:.1f}"),
    ("broadcast", "server_cpu_us_per_frame", "broadcast: server CPU us/frame", False, "{:.2f}"),
    ("capacity", "capacity_clients", "capacity: clients, p95<=250ms", True, "{:,.0f}"),
    ("capacity", "capacity_p95_ms", "capacity: p95 ms at that N", False, "{:.1f}"),
    ("idle", "rss_per_conn_kib", "idle: server RSS KiB/conn", False, "{:.1f}"),
    ("chat", "chat_p50_ms", "chat: latency p50 ms", False, "{:.2f}"),
    ("chat", "chat_p99_ms", "chat: latency p99 ms", False, "{:.2f}"),
    ("http", "history_rps", "http: /history (1024 msgs) req/s", True, "{:,.0f}"),
    ("http", "history_p99_ms", "http: /history p99 ms", False, "{:.1f}"),
    ("http", "rooms_rps", "http: /api/rooms (1000) req/s", True, "{:,.0f}"),
    ("http", "rooms_p99_ms", "http: /api/rooms p99 ms", False, "{:.1f}"),
    ("http", "settings_rps", "http: /api/settings req/s", True, "{:,.0f}"),
    ("http", "settings_p99_ms", "http: /api/settings p99 ms", False, "{:.1f}"),
    ("rooms", "rooms_per_s", "rooms: created/s", True, "{:,.0f}"),
    ("rooms", "rss_per_room_kib", "rooms: server RSS KiB/room", False, "{:.2f}"),
    ("rooms", "msg_bytes", "rooms: a message's JSON, bytes", None, "{:.0f}"),
    ("rooms", "msg_rss_bytes", "rooms: a message in a history, RSS bytes", False, "{:.0f}"),
    ("rooms", "beyond_msg_kib", "rooms: KiB/room beyond its message", False, "{:.2f}"),
    ("crowd", "crowd_clients", "crowd: idle websockets held", True, "{:,.0f}"),
    ("crowd", "crowd_rss_per_conn_kib", "crowd: server RSS KiB/conn", False, "{:.1f}"),
    ("crowd", "crowd_last_ms", "crowd: one broadcast, last client ms", False, "{:.0f}"),
    ("broadcast", "gen_cpu_us_per_frame", "generator CPU us/frame (broadcast)", None, "{:.2f}"),
    ("capacity", "gen_cpu_us_per_frame", "generator CPU us/frame (capacity, max)", None, "{:.2f}"),
    ("crowd", "gen_cpu_us_per_frame", "generator CPU us/frame (crowd)", None, "{:.2f}"),
    ("*", "kernel_drops", "kernel: loopback backlog drops", None, "{:,.0f}"),
    ("*", "kernel_retrans", "kernel: TCP retransmits", None, "{:,.0f}"),
]


def machine_notes():
    notes = []
    try:
        with open("/proc/sys/net/core/netdev_max_backlog") as f:
            backlog = int(f.read())
        if backlog < 10000:
            notes.append("net.core.netdev_max_backlog is %d: with thousands of loopback sockets "
                         "the kernel may drop packets (see the 'kernel' rows); "
                         "`sysctl -w net.core.netdev_max_backlog=10000` avoids it" % backlog)
    except (OSError, ValueError):
        pass
    try:
        load1 = os.getloadavg()[0]
        if load1 > 0.5:
            notes.append("load average %.2f before the start: something else is using the CPUs; "
                         "timings will be noisy" % load1)
    except OSError:
        pass
    return notes


def raise_file_limit():
    """Soft open-file limit up to the hard one, for us and the servers we start
    (they inherit it): the crowd scenario holds as many sockets as allowed."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, OSError, ValueError):
        pass


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------
def _gunicorn_argv(port):
    argv = ["gunicorn"]
    if os.path.exists(os.path.join(ROOT, "gunicorn.conf.py")):
        # the Procfile's mode: its config, with our bind and one worker
        argv += ["-c", "gunicorn.conf.py"]
    argv += ["-k", "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"]
    return argv + ["-w", "1", "-b", "%s:%d" % (HOST, port), "app.wsgi:app"]


def server_specs(nane_args, before=None):
    py = sys.executable
    specs = {
        "nane": {
            "argv": lambda port: [py, "-m", "app", "--addr", "%s:%d" % (HOST, port)] + nane_args,
            "missing": None if os.path.exists(os.path.join(ROOT, "app", "__main__.py"))
            else "app/__main__.py not found beside bench/ (nane not merged yet?)",
            "http": True,
        },
        "nane-gunicorn": {
            "argv": _gunicorn_argv,
            "missing": None if os.path.exists(os.path.join(ROOT, "app", "wsgi.py"))
            else "app/wsgi.py not found beside bench/ (nane not merged yet?)",
            "http": True,
        },
        "ref-gevent": {
            "argv": lambda port: [py, os.path.join(HERE, "ref_gevent.py"), "--addr",
                                  "%s:%d" % (HOST, port)],
            "missing": None,
            "http": True,
        },
        "ref-websockets": {
            "argv": lambda port: [py, os.path.join(HERE, "ref_websockets.py"), "--addr",
                                  "%s:%d" % (HOST, port)],
            "missing": None,
            # websockets answers one HTTP request per connection (no keep-alive)
            "http": False,
        },
    }
    if before:  # another checkout, run the same way as "nane" from its own folder
        specs["nane-before"] = dict(specs["nane"], cwd=before, missing=None if os.path.exists(
            os.path.join(before, "app", "__main__.py")) else "%s has no app/__main__.py" % before)
    return specs


class Server:
    def __init__(self, name, argv_fn, logdir, pin, cwd=ROOT):
        self.name, self.argv_fn, self.logdir, self.pin = name, argv_fn, logdir, pin
        self.cwd = cwd
        self.proc = None
        self.port = None
        self.logpath = None

    def start(self, tag, env=None):
        self.port = free_port()
        argv = self.argv_fn(self.port)
        self.logpath = os.path.join(self.logdir, "%s-%s.log" % (self.name, tag))
        logf = open(self.logpath, "wb")
        pin = self.pin

        def pre():
            if pin:
                os.sched_setaffinity(0, {SERVER_CPU})

        env = dict(os.environ, PORT=str(self.port), PYTHONUNBUFFERED="1",
                   **dict(NANE_ENV, **(env or {})))
        self.proc = subprocess.Popen(argv, cwd=self.cwd, stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=pre,
                                     start_new_session=True, env=env)
        logf.close()
        self.argv = argv

    def wait_ready(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection((HOST, self.port), timeout=2.0) as s:
                    upgrade(s, "/ws?username=ready", f"{HOST}:{self.port}")
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def _procs(self):
        if psutil is None or self.proc is None:
            return []
        try:
            p = psutil.Process(self.proc.pid)
            return [p] + p.children(recursive=True)
        except psutil.Error:
            return []

    def rss(self):
        """Resident set size of the server's process tree, bytes (VmRSS)."""
        total = 0
        for p in self._procs():
            try:
                with open("/proc/%d/status" % p.pid) as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total

    def cpu(self):
        """User+system CPU seconds of the server's process tree."""
        total = 0.0
        for p in self._procs():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def nofile(self):
        """The smallest soft open-file limit in the server's process tree."""
        vals = []
        for p in self._procs():
            try:
                vals.append(p.rlimit(psutil.RLIMIT_NOFILE)[0])
            except (psutil.Error, AttributeError):
                pass
        return min(vals) if vals else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # our own session only
            except ProcessLookupError:
                pass
            try:
                rc = self.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                rc = self.proc.wait(5.0)
        self.proc = None
        return rc


# --------------------------------------------------------------------------
# table
# --------------------------------------------------------------------------
def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, f):
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    try:
        return f.format(v)
    except (ValueError, TypeError):
        return str(v)


def build_table(results, servers, only, runs):
    """results[server][scenario] = list of figure dicts (one per run)."""
    nanes = [s for s in servers if s.startswith("nane") and s != "nane-before"]
    refs = [s for s in servers if s.startswith("ref-")]
    before = "nane-before" in servers and "nane" in servers
    header = (["figure"] + servers + ["%s/best-ref" % n for n in nanes if refs]
              + (["nane/nane-before"] if before else []))
    rows = []
    for scen, key, label, higher, f in FIGURES:
        if scen != "*" and scen not in only:
            continue
        if scen == "*":  # summed over the scenarios of a run, median of runs
            med = {}
            for s in servers:
                per_run = {}
                for sc in only:
                    for i, r in enumerate(results.get(s, {}).get(sc, [])):
                        if r.get(key) is not None:
                            per_run[i] = per_run.get(i, 0) + r[key]
                med[s] = median(list(per_run.values()))
        else:
            med = {s: median([r.get(key) for r in results.get(s, {}).get(scen, [])])
                   for s in servers}
        row = [label] + [fmt(med[s], f) for s in servers]
        if refs:
            ref_vals = [med[r] for r in refs if med[r] is not None]
            for n in nanes:
                if higher is None or not ref_vals or med[n] is None:
                    row.append("")
                    continue
                best = max(ref_vals) if higher else min(ref_vals)
                row.append("%.2fx" % (med[n] / best) if best else "")
        if before:
            then, now = med["nane-before"], med["nane"]
            row.append("%.2fx" % (now / then) if higher is not None and then and now is not None
                       else "")
        rows.append(row)
    # correctness rows: worst over runs and scenarios
    for key, label in (("loss", "loss (frames, all scenarios, worst run)"),
                       ("reorder", "reorder, per sender (worst run)"),
                       ("created_disorder", "created not increasing (worst run)")):
        row = [label]
        for s in servers:
            per_run = {}
            for scen in only:
                for i, r in enumerate(results.get(s, {}).get(scen, [])):
                    if r.get(key) is not None:
                        per_run[i] = per_run.get(i, 0) + r[key]
            row.append(str(max(per_run.values())) if per_run else "n/a")
        row += [""] * (len(header) - len(row))
        rows.append(row)
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i])
                       for i, c in enumerate(r)) for r in [header] + rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


# --------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description="nane benchmarks (see bench/README.md)")
    ap.add_argument("--quick", action="store_true", help="seconds-long smoke run (CI)")
    ap.add_argument("--runs", type=int, default=None, help="runs per figure (default 3, quick 1)")
    ap.add_argument("--only", default=",".join(SCENARIOS),
                    help="comma list of scenarios: " + ",".join(SCENARIOS))
    ap.add_argument("--servers", default="nane,nane-gunicorn,ref-gevent,ref-websockets")
    ap.add_argument("--clients", type=int, help="override broadcast clients")
    ap.add_argument("--messages", type=int, help="override broadcast messages")
    ap.add_argument("--room-count", type=int, help="override rooms: rooms created")
    ap.add_argument("--crowd-clients", type=int,
                    help="override crowd: connections held (default: as the file limits allow)")
    ap.add_argument("--nane-args", default="", help="extra args for `python -m app`")
    ap.add_argument("--no-pin", action="store_true", help="do not pin CPUs")
    ap.add_argument("--drain-ms", type=float, default=None,
                    help="counter connections' read interval in ms (default: auto, "
                         "5..200 ms by N; 0 reads every frame at once)")
    ap.add_argument("--json", help="also write raw per-run figures to this file")
    ap.add_argument("--logdir", help="server logs (default: a temp dir)")
    ap.add_argument("--before", help="another checkout of nane to run beside this one "
                                     "(adds the server nane-before)")
    a = ap.parse_args()

    only = [s.strip() for s in a.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SCENARIOS]
    if bad:
        ap.error("unknown scenario(s): %s" % ",".join(bad))
    params = {k: dict(v) for k, v in (QUICK if a.quick else FULL).items()}
    if a.clients:
        params["broadcast"]["clients"] = a.clients
    if a.messages:
        params["broadcast"]["messages"] = a.messages
    if a.room_count:
        params["rooms"]["count"] = a.room_count
    if a.crowd_clients:
        params["crowd"]["clients"] = a.crowd_clients
    runs = a.runs or (1 if a.quick else 3)
    if a.drain_ms is not None:
        scenarios.DRAIN_OVERRIDE = a.drain_ms / 1000.0

    raise_file_limit()
    pin = not a.no_pin and len(os.sched_getaffinity(0)) >= 2
    if pin:
        os.sched_setaffinity(0, {GEN_CPU})
    specs = server_specs(a.nane_args.split(), a.before and os.path.abspath(a.before))
    servers = []
    failures = []
    names = [x.strip() for x in a.servers.split(",") if x.strip()]
    if a.before and "nane-before" not in names:
        names.insert(names.index("nane") + 1 if "nane" in names else 0, "nane-before")
    for s in names:
        if s not in specs:
            ap.error("unknown server %s (known: %s)" % (s, ", ".join(specs)))
        if specs[s]["missing"]:
            log("SKIP %s: %s" % (s, specs[s]["missing"]))
            continue
        servers.append(s)
    if not servers:
        log("no server to run")
        return 2
    notes = machine_notes()
    for n in notes:
        log("NOTE " + n)
    load_start = os.getloadavg()[0]
    logdir = a.logdir or tempfile.mkdtemp(prefix="nane-bench-")
    os.makedirs(logdir, exist_ok=True)
    log("server logs: %s; pinning: %s" % (
        logdir, "server CPU %d, generator CPU %d" % (SERVER_CPU, GEN_CPU) if pin else "off"))

    results = {s: {} for s in servers}
    t_start = time.monotonic()
    for run in range(runs):
        for scen in only:
            for s in servers:
                if scen == "http" and not specs[s]["http"]:
                    continue
                srv = Server(s, specs[s]["argv"], logdir, pin, specs[s].get("cwd", ROOT))
                tag = "%s-%d" % (scen, run + 1)
                srv.start(tag, scenario_env(scen, params[scen]))
                if not srv.wait_ready():
                    rc = srv.stop()
                    failures.append("%s %s: server did not start (rc %s, log %s)"
                                    % (s, tag, rc, srv.logpath))
                    log("FAIL " + failures[-1])
                    continue
                t0 = time.monotonic()
                k0 = kernel_counters()
                try:
                    res = getattr(scenarios, scen)(HOST, srv.port, server=srv, **params[scen])
                except Exception as e:  # noqa: BLE001 - report it and go on
                    res = {"error": repr(e)}
                k1 = kernel_counters()
                res["kernel_drops"] = k1[0] - k0[0]
                res["kernel_retrans"] = k1[1] - k0[1]
                alive = srv.alive()
                rc = srv.stop()
                res["seconds"] = round(time.monotonic() - t0, 1)
                res["load1"] = round(os.getloadavg()[0], 2)  # the machine is shared
                results[s].setdefault(scen, []).append(res)
                brief = {k: (round(v, 3) if isinstance(v, float) else v)
                         for k, v in res.items() if k != "steps"}
                log("[run %d] %-14s %-9s %s" % (run + 1, s, scen, json.dumps(brief)))
                if "steps" in res:
                    log("    capacity steps: " + json.dumps(res["steps"]))
                if "error" in res:
                    failures.append("%s %s: %s" % (s, tag, res["error"]))
                if not alive:
                    failures.append("%s %s: server crashed during the scenario (rc %s, log %s)"
                                    % (s, tag, rc, srv.logpath))
                if res.get("loss"):
                    failures.append("%s %s: loss %s" % (s, tag, res["loss"]))
                if res.get("reorder"):
                    failures.append("%s %s: reorder %s" % (s, tag, res["reorder"]))
                if res.get("created_disorder"):
                    failures.append("%s %s: `created` not increasing on a connection %s times (%s)"
                                    % (s, tag, res["created_disorder"],
                                       res.get("order_sample") or res.get("created_sample")))
                for k in ("history_len", "rooms_len"):
                    want = params["http"]["history_messages" if k == "history_len" else "rooms"]
                    if k in res and (res[k] or 0) < want:
                        log("WARN %s %s: %s = %s, expected >= %d (server limits?)"
                            % (s, tag, k, res[k], want))
                if scen == "rooms" and res.get("rooms_listed") is not None \
                        and res["rooms_listed"] < params["rooms"]["count"]:
                    log("WARN %s %s: /api/rooms lists %s rooms, expected %d (room limit?)"
                        % (s, tag, res["rooms_listed"], params["rooms"]["count"]))
                if failures and failures[-1].startswith(s + " " + tag):
                    log("FAIL " + failures[-1])

    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next((line.split(":", 1)[1].strip() for line in f
                              if line.startswith("model name")), "")
    except OSError:
        pass
    print("nane bench %s — %s, %d CPUs (%s), Python %s, %s; %d run(s), medians; %s; %.0f s"
          % (datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
             cpu_model or platform.machine(), os.cpu_count(),
             "server pinned to CPU %d, generator to CPU %d" % (SERVER_CPU, GEN_CPU) if pin
             else "unpinned", platform.python_version(), platform.system(), runs,
             "quick" if a.quick else "full", time.monotonic() - t_start))
    print("params: " + json.dumps({k: params[k] for k in only}))
    print("load average (1 min) at start %.2f, at end %.2f" % (load_start, os.getloadavg()[0]))
    for n in notes:
        print("note: " + n)
    print(build_table(results, servers, only, runs))
    print("ratio = nane / better reference (higher-is-better figures: >1 wins; "
          "lower-is-better figures: <1 wins); n/a = not measured")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"params": params, "servers": servers, "runs": runs,
                       "results": results, "failures": failures}, f, indent=1)
    if failures:
        print("FAILURES:")
        for x in failures:
            print("  " + x)
        return 1
    print("OK: no loss, no reordering, `created` increasing, no crashed server")
    return 0


if __name__ == "__main__":
    sys.exit(main())
