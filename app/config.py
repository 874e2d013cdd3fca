"""The one place that reads configuration: environment variables, then command-line flags.

A Procfile deploy configures through the environment (`NANE_<KEY>`, `PORT`,
and `REDIS_URL`, which hosting platforms set when a Redis add-on is attached);
`python -m app` flags override it. A bad value stops the server at start with
a message that names the variable or flag.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

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
    max_id_length: int = 128
    max_frame_bytes: int = 0  # 0: derived from the limits above (frame_bytes_needed)
    max_outbox_messages: int = 4096
    max_rooms: int = 10000
    max_connections: int = 10000
    max_messages_per_second: int = 20
    max_flood_seconds: int = 5
    ping_interval_seconds: int = 25
    ping_timeout_seconds: int = 20
    http_idle_timeout_seconds: int = 75
    shutdown_grace_seconds: int = 10
    write_timeout_seconds: int = 20
    max_fragments_per_message: int = 1024
    max_request_body_bytes: int = 65536
    max_history_bytes: int = 32 * 1024 * 1024
    max_history_bytes_per_address: int = 4 * 1024 * 1024
    max_rooms_per_address: int = 1000
    max_resumes_per_second_per_address: int = 2
    max_connections_per_address: int = 1000
    max_messages_per_second_per_address: int = 200
    forwarded_allow_ips: str = "127.0.0.1,::1"
    max_outbox_bytes: int = 4 * 1024 * 1024
    max_sockets_per_address: int = 1100
    max_actors_listed: int = 100
    debug: bool = False
    redis_url: str = ""  # empty: rooms live in this one process's memory
    redis_stream_messages: int = 10000  # how far back a ?v=2 client can resume, with Redis
    sentry_dsn: str = ""  # empty: no error reporting, and sentry_sdk is never imported
    sentry_send_pii: bool = False  # message texts and usernames stay out of Sentry unless set
    controls: bool = False  # fault controls (app/ops/controls.py): never on a public server
    controls_token: str = ""  # empty: a one-time token is made and printed at start

    def __post_init__(self) -> None:
        if not self.max_frame_bytes:
            object.__setattr__(self, "max_frame_bytes", frame_bytes_needed(self))

    @property
    def host(self) -> str:
        return self.addr.rpartition(":")[0] or "0.0.0.0"

    @property
    def port(self) -> int:
        return int(self.addr.rpartition(":")[2])

    def limits(self) -> dict[str, int]:
        """The integer limits, by their `/api/settings` key: every `max_*` and `*_seconds`."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if TYPES[f.name] is int
                and (f.name.startswith("max_") or f.name.endswith("_seconds"))}


# Each setting's type, resolved: a dataclass field's `type` is whatever the annotation
# says, the text "int" under `from __future__ import annotations`, the class otherwise.
TYPES: dict[str, type] = get_type_hints(Config)


# A client frame at the limits, in its longest valid JSON spelling: every character of
# room, text and id written as `\uXXXX\uXXXX` (a character beyond the BMP is a
# surrogate pair: 12 bytes), plus the rest of the object.
BYTES_PER_CHARACTER = 12
# `{`, `}`, the keys "room", "text", "id" spelled with escapes too (10 characters x 6
# bytes), the quotes, colons and commas: 79 bytes; the rest is room for whitespace.
FRAME_OVERHEAD_BYTES = 1024


def frame_bytes_needed(config: Config) -> int:
    """The largest frame a message at every limit can take: the default `max_frame_bytes`.

    12 x (max_message_length + max_room_title_length + max_id_length) + 1024.
    """
    characters = config.max_message_length + config.max_room_title_length + config.max_id_length
    return BYTES_PER_CHARACTER * characters + FRAME_OVERHEAD_BYTES


HELP = {
    "addr": "HOST:PORT to listen on; without it, env PORT sets 0.0.0.0:PORT",
    "kozma": "start the bot Kozma Prutkov in room 'kozma'",
    "kozma_first_delay": "seconds before the bot's first aphorism",
    "kozma_max_pause": "the bot pauses a random 0..N seconds between aphorisms",
    "max_messages_in_room": "messages each room keeps",
    "max_message_length": "a message text is cut to this many characters",
    "max_room_title_length": "a room name is cut to this many characters",
    "max_username_length": "a username is cut to this many characters",
    "max_id_length": "a message whose id is longer than this many characters is dropped",
    "max_frame_bytes": "a bigger websocket message closes the connection with 1009; the "
                       "default fits a message at every limit in any JSON spelling: 12 x "
                       "(max_message_length + max_room_title_length + max_id_length) + 1024",
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
    "write_timeout_seconds": "a write to a client that makes no progress for this long closes "
                             "the connection",
    "max_fragments_per_message": "a websocket message in more frames than this closes the "
                                 "connection with 1008",
    "max_request_body_bytes": "an HTTP request with a bigger body is refused with 413, unread",
    "max_history_bytes": "bytes of messages all rooms keep together; past it the oldest "
                         "messages are forgotten",
    "max_history_bytes_per_address": "bytes of messages one client address may have in the "
                                     "histories; past it its own oldest messages are forgotten "
                                     "first",
    "max_rooms_per_address": "rooms one client address may have created and kept; past it its "
                             "own least recently active room is forgotten first",
    "max_resumes_per_second_per_address": "?v=2&since= replays one client address may ask for "
                                          "per second (bursts of five seconds' worth); more "
                                          "are answered with gone",
    "max_connections_per_address": "open websockets one client address may hold; more are "
                                   "refused with 429",
    "max_messages_per_second_per_address": "messages per second one client address may send "
                                           "over all its connections (never less than "
                                           "max_messages_per_second); more are dropped",
    "forwarded_allow_ips": "peers (comma-separated, or *) whose X-Forwarded-For names the "
                           "client address, like gunicorn's setting",
    "max_outbox_bytes": "bytes of frames waiting for a client before it is cut off as too slow "
                        "(1008)",
    "max_sockets_per_address": "TCP connections one client address may hold open at once, "
                               "websockets and HTTP alike, counted from accept(); more are closed "
                               "at once. Never more than a quarter of the file descriptors the "
                               "process may open, less 64 (the log says what that is at start)",
    "max_actors_listed": "rooms (the most recently active) and sessions (the oldest) each "
                         "listed in /api/actors at most; the answer gives their totals too",
    "debug": "serve /debug/stats (greenlet count, memory); off on the public internet",
    "redis_url": "redis://HOST:PORT/DB shared by every process that serves the same rooms",
    "redis_stream_messages": "with Redis: about this many recent messages are kept in the stream "
                             "that ?v=2 clients resume from (since=)",
    "sentry_dsn": "report errors to this Sentry DSN",
    "sentry_send_pii": "send message texts, usernames and request data to Sentry too",
    "controls": "fault controls in /actors and /api/controls/* (crash, slow down, pause, "
                "disconnect, forget, delay), for lessons and for testing clients",
    "controls_token": "the token the fault controls answer to; unset, a one-time token is "
                      "made and printed at start",
}

# The original Go server's flags (Go's flag package takes -name and --name alike).
ORIGINAL_FLAGS = {
    "addr": ["-addr"],
    "kozma": ["-kozma"],
    "sentry_dsn": ["--sentrydsn", "-sentrydsn"],
    "max_messages_in_room": ["--maxmessagesinroom", "-maxmessagesinroom"],
    "max_room_title_length": ["--maxroomtitlelength", "-maxroomtitlelength"],
    "max_username_length": ["--maxusernamelength", "-maxusernamelength"],
    "max_message_length": ["--maxmessagelength", "-maxmessagelength"],
}

# Settings that a second variable name also sets (what hosting platforms and tools set).
FALLBACK_ENV = {"redis_url": "REDIS_URL", "sentry_dsn": "SENTRY_DSN"}

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class ConfigError(ValueError):
    """A setting has a value we cannot use; the text names it."""


def env_name(key: str) -> str:
    return "NANE_" + key.upper()


def from_env(environ: Mapping[str, str] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings the environment gives, by key, and the variable each came from.

    `NANE_ADDR` wins over `PORT`; a `NANE_` variable wins over its fallback
    (`REDIS_URL`, `SENTRY_DSN`).
    """
    environ = os.environ if environ is None else environ
    values, sources = {}, {}
    if environ.get("PORT"):
        values["addr"] = _convert("port", environ["PORT"], "PORT")
        sources["addr"] = "PORT"
    for key, variable in FALLBACK_ENV.items():
        if environ.get(variable):
            values[key] = _convert(key, environ[variable], variable)
            sources[key] = variable
    for f in fields(Config):
        raw = environ.get(env_name(f.name))
        if raw is not None and raw != "":
            values[f.name] = _convert(f.name, raw, env_name(f.name))
            sources[f.name] = env_name(f.name)
    return values, sources


def _convert(key: str, raw: str, source: str) -> bool | int | float | str:
    """`raw` as the setting `key` takes it (`port`: the `PORT` variable, making an `addr`)."""
    kind = "port" if key == "port" else TYPES[key]
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ValueError(raw)
            return lowered in {"1", "true", "yes", "on"}
        if kind is int:
            value = int(raw)
            if value < 1:
                raise ValueError(raw)
            return value
        if kind is float:
            seconds = float(raw)
            if seconds < 0:
                raise ValueError(raw)
            return seconds
        if kind == "port":
            return "0.0.0.0:" + str(_port(raw))
        if key == "redis_url":
            if not raw.startswith(REDIS_SCHEMES):
                raise ValueError(raw)
            return raw
        if key == "sentry_dsn":
            if not raw.startswith(("http://", "https://")):
                raise ValueError(raw)
            return raw
        if key == "addr":
            host, sep, port = raw.rpartition(":")
            if not sep:
                raise ValueError(raw)
            _port(port)
        return raw
    except ValueError:
        raise ConfigError(f"{source}={raw!r} is not a valid {_describe(key, kind)}") from None


def _port(raw: str) -> int:
    port = int(raw)
    if not 0 <= port <= 65535:
        raise ValueError(raw)
    return port


def _describe(key: str, kind: type | str) -> str:
    if key == "redis_url":
        return "redis:// (or rediss://, unix://) URL"
    if key == "sentry_dsn":
        return "Sentry DSN (https://KEY@HOST/PROJECT)"
    return {bool: "boolean (1/0, true/false)", int: "positive integer",
            float: "non-negative number", "port": "port number (0-65535)"}.get(kind, "HOST:PORT")


METAVARS = {"addr": "HOST:PORT", "redis_url": "URL", "sentry_dsn": "DSN",
            "forwarded_allow_ips": "ADDRESSES", "controls_token": "TOKEN"}


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="python -m app", description="nane chat server",
        epilog="The original server's flags work too: " + ", ".join(
            names[0] for names in ORIGINAL_FLAGS.values()) + " (with one dash or two).")
    for f in fields(Config):
        names = [_flag(f.name), *ORIGINAL_FLAGS.get(f.name, [])]
        env = env_name(f.name) + (f" or {FALLBACK_ENV[f.name]}" if f.name in FALLBACK_ENV else "")
        if TYPES[f.name] is bool:
            # `-kozma`, and Go's `-kozma=true` / `-kozma=false`
            cli.add_argument(*names, dest=f.name, nargs="?", const="1", default=None,
                             metavar="BOOL", help=f"{HELP[f.name]} (default off; env {env})")
        else:
            default = f.default if f.default not in ("", 0) else (
                "that formula" if f.name == "max_frame_bytes" else "none")
            metavar = METAVARS.get(f.name) or {int: "N", float: "SECONDS"}.get(TYPES[f.name],
                                                                                "TEXT")
            cli.add_argument(*names, dest=f.name, default=None, metavar=metavar,
                             help=f"{HELP[f.name]} (default {default}; env {env})")
    return cli


def load(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Environment first, flags on top. Raises ConfigError naming the bad setting."""
    values, sources = from_env(environ)
    args = parser().parse_args([] if argv is None else argv)
    for key, raw in vars(args).items():
        if raw is not None:
            values[key] = _convert(key, raw, _flag(key))
            sources[key] = _flag(key)
    config = Config(**values)
    _check_frame_fits(config, sources)
    return config


def load_or_exit(argv: list[str] | None = None) -> Config:
    """`load`, or one line naming the bad setting on stderr and exit code 2 (as argparse does)."""
    try:
        return load(argv)
    except ConfigError as error:
        print(f"nane: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _check_frame_fits(config: Config, sources: dict[str, str]) -> None:
    """A `max_frame_bytes` too small for a message at the limits would refuse legal messages."""
    needed = frame_bytes_needed(config)
    if config.max_frame_bytes >= needed:
        return

    def named(key: str) -> str:
        return f"{sources.get(key, key)}={getattr(config, key)}"

    raise ConfigError(
        f"{named('max_frame_bytes')} is too small for {named('max_message_length')}, "
        f"{named('max_room_title_length')} and {named('max_id_length')}: a message at those "
        f"limits can take {needed} bytes (12 per character + 1024); raise max_frame_bytes "
        f"or lower the others")
