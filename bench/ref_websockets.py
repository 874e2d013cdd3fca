"""Reference (b): the same protocol on asyncio `websockets` (new asyncio API),
fanning out with websockets' own broadcast() helper.

HTTP endpoints are served through process_request. websockets answers one
HTTP request per connection (it closes after the response, GET only), so the
benchmark reports its keep-alive HTTP figures as n/a.

    python bench/ref_websockets.py --addr 127.0.0.1:8080
"""
import argparse
import asyncio
import os
import sys
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import broadcast, serve
from websockets.datastructures import Headers
from websockets.http11 import Response

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from refcommon import CONTENT_TYPE, Rooms, parse_addr, username_from_query  # noqa: E402

ROOMS = Rooms()
CLIENTS = set()


def process_request(connection, request):
    u = urlsplit(request.path)
    if u.path == "/ws":
        if not username_from_query(u.query):
            return connection.respond(401, "name required\n")
        return None
    status, body = ROOMS.http_bytes(unquote(u.path))
    return Response(status, "OK" if status == 200 else "Not Found",
                    Headers([("Content-Type", CONTENT_TYPE),
                             ("Access-Control-Allow-Origin", "*"),
                             ("Content-Length", str(len(body))),
                             ("Connection", "close")]),
                    body)


async def handler(ws):
    username = username_from_query(urlsplit(ws.request.path).query)
    CLIENTS.add(ws)
    try:
        async for raw in ws:
            if not isinstance(raw, str):
                continue
            got = ROOMS.accept(username, raw)
            if got is None:
                continue
            kind, data = got
            if kind == "pong":
                await ws.send(data)
            else:
                broadcast(CLIENTS, data)  # encodes the str once
    except Exception:
        pass
    finally:
        CLIENTS.discard(ws)


async def amain(addr):
    host, port = parse_addr(addr)
    async with serve(handler, host, port, process_request=process_request,
                     compression=None, backlog=1024) as server:
        print("ref-websockets listening on", addr, flush=True)
        await server.serve_forever()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--addr", default="127.0.0.1:8080")
    a = p.parse_args()
    try:
        asyncio.run(amain(a.addr))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
