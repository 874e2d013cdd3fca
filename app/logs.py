"""Logging: one line per event on stdout, in logfmt (actors/logfmt.py), which platform log drains parse."""

from __future__ import annotations

import logging
import sys

from actors import logfmt


def setup(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logfmt.LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # gevent-websocket logs every HTTP request at INFO; the platform's router does that already
    logging.getLogger("geventwebsocket.handler").setLevel(logging.WARNING)
