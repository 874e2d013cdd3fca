"""Protocol core shared by the two reference servers (bench/ref_*.py).

Deliberately naive: plain dicts, stdlib json, no caching. It is the bar a
"minimal" server sets, not a model of how nane should do it.
"""
import collections
import json
import time
from urllib.parse import parse_qs

MAX_MESSAGES_IN_ROOM = 1024
MAX_MESSAGE_LENGTH = 10500
MAX_ROOM_TITLE_LENGTH = 50
MAX_USERNAME_LENGTH = 50
START_NS = time.monotonic_ns()

_last_created = 0


def created_now():
    """UTC RFC 3339 with 9 fractional digits and Z, unique and increasing."""
    global _last_created
    t = time.time_ns()
    if t <= _last_created:
        t = _last_created + 1
    _last_created = t
    s, ns = divmod(t, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + ".%09dZ" % ns


def username_from_query(qs):
    q = parse_qs(qs or "", keep_blank_values=True)
    for key in ("username", "name"):
        v = (q.get(key) or [""])[0].strip()
        if v:
            return v[:MAX_USERNAME_LENGTH]
    return ""


class Rooms:
    def __init__(self):
        self.rooms = {}  # lower(name) -> {"name", "history": deque}

    def accept(self, username, raw):
        """Parse one client text frame. Returns ("pong", str) for a ping,
        ("msg", str) for an accepted message (JSON encoded once), or None."""
        try:
            d = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(d, dict):
            return None
        if d.get("ping") is True:
            return ("pong", '{"pong":true}')
        room, text = d.get("room"), d.get("text")
        if not isinstance(room, str) or not isinstance(text, str):
            return None
        room = room.strip()[:MAX_ROOM_TITLE_LENGTH]
        text = text.strip()[:MAX_MESSAGE_LENGTH]
        if not room or not text:
            return None
        key = room.lower()
        r = self.rooms.get(key)
        if r is None:
            r = self.rooms[key] = {"name": room,
                                   "history": collections.deque(maxlen=MAX_MESSAGES_IN_ROOM)}
        msg = {}
        mid = d.get("id")
        if isinstance(mid, str) and mid:
            msg["id"] = mid
        msg["room"] = r["name"]
        msg["created"] = created_now()
        msg["sender"] = {"username": username}
        msg["text"] = text
        r["history"].append(msg)
        return ("msg", json.dumps(msg, ensure_ascii=False))

    # --- HTTP ---------------------------------------------------------------
    def settings(self):
        return {"max_message_length": MAX_MESSAGE_LENGTH,
                "max_room_title_length": MAX_ROOM_TITLE_LENGTH,
                "max_username_length": MAX_USERNAME_LENGTH,
                "uptime": time.monotonic_ns() - START_NS}

    def room_obj(self, r):
        last = dict(r["history"][-1])
        last.pop("id", None)
        return {"name": r["name"], "last_message": last}

    def http(self, path):
        """path: percent-decoded str. Returns (status, body bytes)."""
        if path == "/api/settings":
            return 200, {"result": self.settings()}
        if path == "/api/rooms":
            return 200, {"result": [self.room_obj(r) for r in self.rooms.values()]}
        if path.startswith("/api/rooms/"):
            name = path[len("/api/rooms/"):]
            hist = name.endswith("/history")
            if hist:
                name = name[:-len("/history")]
            r = self.rooms.get(name.lower())
            if r is None:
                return 404, {"error": "room %s not found" % name}
            if hist:
                return 200, {"result": list(r["history"])}
            return 200, {"result": self.room_obj(r)}
        return 404, {"error": "not found"}

    def http_bytes(self, path):
        status, obj = self.http(path)
        return status, json.dumps(obj, ensure_ascii=False).encode("utf-8")


CONTENT_TYPE = "application/json; charset=utf-8"


def parse_addr(addr):
    host, _, port = addr.rpartition(":")
    return host or "127.0.0.1", int(port)
