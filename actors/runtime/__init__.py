"""The actor system itself, with no chat in it: actors, their mailboxes and the dispatcher
that runs them, supervisors that restart them, and the trace of every message."""
