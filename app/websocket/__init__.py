"""`/ws`: the handshake, the transport that reads and writes frames, and the read loop."""
