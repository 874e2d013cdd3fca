"""`/ws`: the handshake, the transport that reads and writes frames, and the read loop."""

from __future__ import annotations

import socket
from typing import BinaryIO, NamedTuple

from flask import Response


class Upgraded(NamedTuple):
    """A socket some library has answered the handshake on; ours alone from then on.

    `rfile` is the buffered reader over it (holding whatever was read past
    the request head); `answer()` is what the /ws view returns once the
    connection is over: the server it runs under must write nothing more.
    """

    socket: socket.socket
    rfile: BinaryIO
    answer: type[Response]
