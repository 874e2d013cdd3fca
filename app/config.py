"""The one place that reads configuration: environment variables, then command-line flags.

A Procfile deploy configures through the environment (`NANE_<KEY>`, `PORT`,
and `REDIS_URL`, which hosting platforms set when a Redis add-on is attached);
`python -m app` flags override it. A bad value stops the server at start with
a message that names the variable or flag.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields

DEFAULT_ADDR = "127.0.0.1:8022"  # the original's default


@dataclass(frozen=True)
class Config:
    """Every setting, with its default. Limits appear in `/api/settings` too."""

    addr: str = DEFAULT_ADDR
    kozma: bool = False
    kozma_first_delay: float = 5.0
    kozma_max_pause: float = 60.0
    max_messages_in_room: int = 1024
    max_message_length: int = 10500
    max_room_title_length: int = 50
    max_username_length: int = 50
    max_frame_bytes: int = 65536
    max_outbox_messages: int = 4096
    max_rooms: int = 10000
    max_connections: int = 10000
    max_messages_per_second: int = 20
    max_flood_seconds: int = 5
    ping_interval_seconds: int = 25
    ping_timeout_seconds: int = 20
    http_idle_timeout_seconds: int = 75
    shutdown_grace_seconds: int = 10
    max_outbox_bytes: int = 4 * 1024 * 1024
    debug: bool = False
    redis_url: str = ""  # empty: rooms live in this one process's memory
    controls: bool = False  # fault controls (app/controls.py): never on a public server
    controls_token: str = ""  # empty: a one-time token is made and printed at start

    @property
    def host(self) -> str:
        return self.addr.rpartition(":")[0] or "0.0.0.0"

    @property
    def port(self) -> int:
        return int(self.addr.rpartition(":")[2])

    def limits(self) -> dict[str, int]:
        """The integer limits, by their `/api/settings` key: every `max_*` and `*_seconds`."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.type == "int" and (f.name.startswith("max_") or f.name.endswith("_seconds"))}


HELP = {
    "addr": "HOST:PORT to listen on (env NANE_ADDR; PORT alone sets 0.0.0.0:PORT)",
    "kozma": "start the bot Kozma Prutkov in room 'kozma'",
    "kozma_first_delay": "seconds before the bot's first aphorism",
    "kozma_max_pause": "the bot pauses a random 0..N seconds between aphorisms",
    "max_messages_in_room": "messages each room keeps",
    "max_message_length": "a message text is cut to this many characters",
    "max_room_title_length": "a room name is cut to this many characters",
    "max_username_length": "a username is cut to this many characters",
    "max_frame_bytes": "a bigger websocket message closes the connection with 1009",
    "max_outbox_messages": "frames waiting for a client before it is cut off as too slow",
    "max_rooms": "rooms kept at once; the least recently active is forgotten first",
    "max_connections": "open websockets at once; more are refused with 503 (or closed with 1013)",
    "max_messages_per_second": "frames a connection may send per second on average (bursts of "
                               "five seconds' worth); more are dropped",
    "max_flood_seconds": "seconds in a row a connection may exceed max_messages_per_second "
                         "before it is closed with 1008",
    "ping_interval_seconds": "a websocket protocol ping goes to every client this often",
    "ping_timeout_seconds": "a client that has not answered a ping within this is closed (1011)",
    "http_idle_timeout_seconds": "a connection that has not sent a complete HTTP request head "
                                 "within this (since it opened or since its last answer) is dropped",
    "shutdown_grace_seconds": "on SIGTERM: close every websocket with 1001 and exit within this",
    "max_outbox_bytes": "bytes of frames waiting for a client before it is cut off as too slow "
                        "(1008)",
    "debug": "serve /debug/stats (greenlet count, memory); off on the public internet",
    "redis_url": "redis://HOST:PORT/DB shared by every process that serves the same rooms "
                 "(falls back to env REDIS_URL)",
    "controls": "fault controls in /actors and /api/controls/* (crash, slow down, pause, "
                "disconnect, forget, delay), for lessons and for testing clients",
    "controls_token": "the token the fault controls answer to (default: a one-time token "
                      "printed at start)",
}

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class ConfigError(ValueError):
    """A setting has a value we cannot use; the text names it."""


def env_name(key: str) -> str:
    return "NANE_" + key.upper()


def from_env(environ: os._Environ | dict | None = None) -> dict:
    """The settings the environment gives, by key."""
    environ = os.environ if environ is None else environ
    values = {}
    if environ.get("PORT"):
        values["addr"] = "0.0.0.0:" + environ["PORT"]
    for f in fields(Config):
        raw = environ.get(env_name(f.name))
        if raw is not None and raw != "":
            values[f.name] = _convert(f.name, raw, env_name(f.name))
    if "redis_url" not in values and environ.get("REDIS_URL"):
        values["redis_url"] = _convert("redis_url", environ["REDIS_URL"], "REDIS_URL")
    return values


def _convert(key: str, raw: str, source: str):
    kind = Config.__dataclass_fields__[key].type
    try:
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ValueError(raw)
            return lowered in {"1", "true", "yes", "on"}
        if kind == "int":
            value = int(raw)
            if value < 1:
                raise ValueError(raw)
            return value
        if kind == "float":
            value = float(raw)
            if value < 0:
                raise ValueError(raw)
            return value
        if key == "redis_url":
            if not raw.startswith(REDIS_SCHEMES):
                raise ValueError(raw)
            return raw
        if key == "addr":
            host, sep, port = raw.rpartition(":")
            if not sep or not 0 <= int(port) <= 65535:
                raise ValueError(raw)
        return raw
    except ValueError:
        raise ConfigError(f"{source}={raw!r} is not a valid {_describe(key, kind)}") from None


def _describe(key: str, kind: str) -> str:
    if key == "redis_url":
        return "redis:// (or rediss://, unix://) URL"
    return {"bool": "boolean (1/0, true/false)", "int": "positive integer",
            "float": "non-negative number"}.get(kind, "HOST:PORT")


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(prog="python -m app", description="nane chat server")
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            names = [flag, "-kozma"] if f.name == "kozma" else [flag]
            cli.add_argument(*names, dest=f.name, action="store_const", const="1",
                             default=None, help=HELP[f.name])
        else:
            cli.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(),
                             help=f"{HELP[f.name]} (default {f.default}; env {env_name(f.name)})")
    return cli


def load(argv: list[str] | None = None, environ: dict | None = None) -> Config:
    """Environment first, flags on top. Raises ConfigError naming the bad setting."""
    values = from_env(environ)
    args = parser().parse_args([] if argv is None else argv)
    for key, raw in vars(args).items():
        if raw is not None:
            values[key] = _convert(key, raw, "--" + key.replace("_", "-"))
    return Config(**values)
