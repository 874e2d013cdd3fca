"""Reference (a): the minimal gevent + gevent-websocket broadcast server.

A plain set of sockets; each accepted message is JSON-encoded once and sent in
a loop to every socket (gevent-websocket then UTF-8-encodes the str per
send: that is what the library does with text). Deliberately naive: no TCP_NODELAY, pywsgi's default
response writing, nothing clever. It is the bar a minimal gevent server sets.
Only the access log is off (log=None), so we do not benchmark stderr.

    python bench/ref_gevent.py --addr 127.0.0.1:8080
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from gevent.pywsgi import WSGIServer  # noqa: E402
from geventwebsocket.handler import WebSocketHandler  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from refcommon import CONTENT_TYPE, Rooms, parse_addr, username_from_query  # noqa: E402

ROOMS = Rooms()
SOCKETS = set()


def handle_ws(environ, ws):
    username = username_from_query(environ.get("QUERY_STRING"))
    if not username:
        ws.close()
        return
    SOCKETS.add(ws)
    try:
        while True:
            raw = ws.receive()
            if raw is None:
                break
            got = ROOMS.accept(username, raw)
            if got is None:
                continue
            kind, data = got
            if kind == "pong":
                ws.send(data)
                continue
            for s in list(SOCKETS):
                try:
                    s.send(data)
                except Exception:
                    SOCKETS.discard(s)
    except Exception:
        pass
    finally:
        SOCKETS.discard(ws)


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    ws = environ.get("wsgi.websocket")
    if path == "/ws":
        if ws is None:
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"websocket upgrade required"]
        handle_ws(environ, ws)
        return []
    try:
        path = path.encode("latin-1").decode("utf-8")
    except UnicodeError:
        pass
    status, body = ROOMS.http_bytes(path)
    start_response("%d %s" % (status, "OK" if status == 200 else "Not Found"),
                   [("Content-Type", CONTENT_TYPE),
                    ("Access-Control-Allow-Origin", "*"),
                    ("Content-Length", str(len(body)))])
    return [body]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--addr", default="127.0.0.1:8080")
    a = p.parse_args()
    server = WSGIServer(parse_addr(a.addr), app, handler_class=WebSocketHandler,
                        log=None, backlog=1024)
    print("ref-gevent listening on", a.addr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
