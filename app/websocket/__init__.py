"""`/ws`: the handshake, the transport that reads and writes frames, and the read loop."""

from __future__ import annotations

import socket
from io import BufferedIOBase
from typing import NamedTuple

from flask import Response


class Upgraded(NamedTuple):
    """A socket whose handshake has been answered (101); ours alone from then on.

    `rfile` is the buffered reader over it (holding whatever was read past
    the request head); `answer()` is what the /ws view returns once the
    connection is over: the server it runs under must write nothing more.
    """

    socket: socket.socket
    rfile: BufferedIOBase
    answer: type[Response]


class ClientGone(ConnectionError):
    """The client went away (a reset, a closed socket) while its handshake was being answered.

    Nothing more can be written to it, and a peer that leaves is no server
    error: the /ws view logs one line and returns `answer()`, after which the
    server it runs under writes nothing more.
    """

    def __init__(self, answer: type[Response]) -> None:
        super().__init__("the client went away during the handshake")
        self.answer = answer
