"""Logging: one line per event on stdout, in logfmt, which platform log drains parse."""

from __future__ import annotations

import logging
import sys
import time


class LogfmtFormatter(logging.Formatter):
    """`time=... level=... logger=... msg="..."`; messages already written as key=value pass through."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        message = record.getMessage().replace("\n", " ")
        if "=" not in message.split(" ", 1)[0]:
            message = "msg=" + _quote(message)
        line = (f"time={stamp}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
                f"logger={record.name} {message}")
        if record.exc_info:
            line += " error=" + _quote(self.formatException(record.exc_info).replace("\n", " | "))
        return line


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def setup(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # gevent-websocket logs every HTTP request at INFO; the platform's router does that already
    logging.getLogger("geventwebsocket.handler").setLevel(logging.WARNING)
