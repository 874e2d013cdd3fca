"""logfmt, the one format of our log lines, written so that no value can forge a field or a line.

Our logs are logfmt (`key=value key="a value"`), one line per event, and log
drains parse them. A value often comes from anyone: a username, a room name
(in an actor's name, `room:<name>`), a proxy's header. Written raw or with
Python's `%r` (single quotes, which logfmt does not know), `mallory
level=error event=admin_login` adds fields to the line, a newline adds a line,
and ESC or U+202E rewrites what a terminal shows. So every value goes through
`value`: bare when that is unambiguous, else in double quotes with backslash
escapes, and never with a control character in it (C0 and C1, U+0085,
U+2028/2029, and the invisible format characters: bidi overrides, zero-width
spaces), which become `\\n`, `\\t`, `\\u001b`, `\\u202e`:

    log.info("event=ws_open session=%s username=%s", name, logfmt.value(username))

`LogfmtFormatter` writes the line around it (`time=… level=… logger=…`) and
is the safety net: a message that is not clean logfmt with one `event` (a
library's line, or a value written without `value`), or that would name a
field twice, goes in one quoted `msg`, as `event=log msg="…"`. So every line
has exactly one `level` and one `event`.

Here in `actors/`, which knows nothing of `app/`, because actors log names
too; the app installs the formatter (app/logs.py), and gunicorn.conf.py loads
this file alone for gunicorn's own lines. Standard library only, for that.
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata

# a bare value: no space of any kind, `=`, `"` or `\` (and nothing `_escaped`, checked apart)
_BARE = re.compile(r'[^\s="\\]+')
_SHORT = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPED_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs"}  # controls, format characters, line breaks
# one field of clean logfmt, as this module writes it
_FIELD = re.compile(r'[A-Za-z_][A-Za-z0-9_.:-]*=(?:"(?:[^"\\]|\\.)*"|[^\s="\\]+)')
LINE_KEYS = ("time", "level", "logger")  # the formatter's own fields


def value(anything: object) -> str:
    """`anything` as one logfmt value: bare (`ann`) or double-quoted and escaped (`"a b"`)."""
    text = str(anything)
    if _BARE.fullmatch(text) and not any(map(_escaped, text)):
        return text
    return '"' + "".join(map(_escape, text)) + '"'


def keys(message: str) -> list[str] | None:
    """The keys of `message` when it is clean logfmt (fields one space apart), else None."""
    if any(map(_escaped, message.replace(" ", "").replace("\\", "").replace('"', ""))):
        return None
    found, at = [], 0
    while at < len(message):
        field = _FIELD.match(message, at)
        if field is None:
            return None
        found.append(field[0].split("=", 1)[0])
        at = field.end()
        if at < len(message):
            if message[at] != " ":
                return None
            at += 1
    return found


class LogfmtFormatter(logging.Formatter):
    """`time=… level=… logger=… event=… <the message's other fields>`; see the module's docstring."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        message = record.getMessage()
        fields = keys(message) or []
        if ("event" not in fields or len(set(fields)) < len(fields)
                or not set(fields).isdisjoint(LINE_KEYS)):
            message = "event=log msg=" + value(message)  # a library's line, or a forged one
        line = (f"time={stamp}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
                f"logger={value(record.name)} {message}")
        if record.exc_info:
            line += " traceback=" + value(self.formatException(record.exc_info))
        return line


def _escaped(char: str) -> bool:
    return char in _SHORT or unicodedata.category(char) in _ESCAPED_CATEGORIES


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    if unicodedata.category(char) in _ESCAPED_CATEGORIES:
        code = ord(char)
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return char
