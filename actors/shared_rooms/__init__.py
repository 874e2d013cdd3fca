"""Rooms shared by several server processes through Redis: the store, the listener that
hears other processes' posts, and the registry that consults both."""
