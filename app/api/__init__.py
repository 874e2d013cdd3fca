"""The HTTP API: settings, rooms, a room, its history, and the machine-readable contract."""
