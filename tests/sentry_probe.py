"""Run by tests/test_errors.py in a process of its own: the app with Sentry on, made to fail.

Usage: python -m tests.sentry_probe --sentry-dsn DSN [more app flags]

An actor fails on a message (it carries chat text that must not reach Sentry),
a supervised actor's greenlet crashes and is restarted, and a request raises.
Then Sentry is flushed and the process exits.
"""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

import gevent  # noqa: E402
import sentry_sdk  # noqa: E402

from actors.chat.message import Draft  # noqa: E402
from actors.chat.registry import Post  # noqa: E402
from actors.runtime.actor import Actor  # noqa: E402
from actors.runtime.supervisor import Supervisor  # noqa: E402
from app import create_app, logs  # noqa: E402
from app.config import load  # noqa: E402
from tests.sentry_receiver import SECRET_TEXT, SECRET_USER  # noqa: E402


class Crash(BaseException):
    """Not an Exception: it ends the actor's greenlet, which its supervisor sees."""


class Fragile(Actor):
    def receive(self, message):
        if message == "crash":
            raise Crash("the greenlet ended")
        if message == "done":
            return True
        raise ValueError("could not handle the message")


def main() -> None:
    logs.setup()
    app = create_app(load(sys.argv[1:], {}))

    @app.route("/boom")
    def boom():
        raise RuntimeError("a request failed")

    failing = Fragile("room:probe").start()
    failing.tell(Post(Draft(room="probe", text=SECRET_TEXT), SECRET_USER))
    crashing = Fragile("session:probe").start(Supervisor(max_restarts=3, within_seconds=10))
    crashing.tell("crash")
    assert crashing.ask("done", timeout=5)  # answered by the restarted greenlet
    assert failing.ask("done", timeout=5)
    app.test_client().get(f"/boom?username={SECRET_USER}")
    gevent.sleep(0)
    sentry_sdk.flush(timeout=10)


if __name__ == "__main__":
    main()
