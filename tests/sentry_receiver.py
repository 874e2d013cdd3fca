"""A small HTTP server on loopback that takes what sentry-sdk sends: the test's Sentry."""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Chat data tests/sentry_probe.py puts where a careless report would pick it up.
SECRET_TEXT = "secret text 8317"
SECRET_USER = "secret-user-4410"


class SentryReceiver:
    """Collects the events posted to `/api/<project>/envelope/`; `dsn` points a client here."""

    def __init__(self):
        self.events: list[dict] = []
        self.raw: list[bytes] = []
        self._arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver._take(body)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://publickey@127.0.0.1:{self._server.server_port}/42"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _take(self, envelope: bytes) -> None:
        events = [item for kind, item in parse_envelope(envelope) if kind == "event"]
        with self._arrived:
            self.raw.append(envelope)
            self.events.extend(events)
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout: float) -> list[dict]:
        """At least `count` events, or what arrived within `timeout` seconds."""
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.events) >= count, timeout)
            return list(self.events)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def parse_envelope(envelope: bytes) -> list[tuple[str, dict]]:
    """Sentry's envelope format: a header line, then (item header line, payload) pairs."""
    items, rest = [], envelope.split(b"\n", 1)[1] if b"\n" in envelope else b""
    while rest.strip():
        header_line, rest = rest.split(b"\n", 1)
        header = json.loads(header_line)
        if "length" in header:
            payload, rest = rest[:header["length"]], rest[header["length"] + 1:]
        else:
            payload, _, rest = rest.partition(b"\n")
        try:
            items.append((header.get("type"), json.loads(payload)))
        except ValueError:
            items.append((header.get("type"), {}))
    return items
