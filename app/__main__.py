"""`python -m app`: the embedded default — one process, rooms in memory, port 8022."""

from gevent import monkey

monkey.patch_all()

import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402

from app import create_app, logs  # noqa: E402
from app.config import load_or_exit  # noqa: E402
from app.ops.service import connections_of, stop_gracefully  # noqa: E402
from app.server import make_server  # noqa: E402

log = logging.getLogger("nane")


def main(argv: list[str] | None = None) -> int:
    logs.setup()
    config = load_or_exit(sys.argv[1:] if argv is None else argv)
    app = create_app(config)
    server = make_server(app, config.host, config.port)
    stopped = Event()
    app_connections = connections_of(app)
    assert app_connections is not None  # create_app installed them

    def stop(signum: int) -> None:
        if stopped.is_set() or app_connections.stopping:
            return
        log.info("event=signal signal=%s", signal.Signals(signum).name)
        stop_gracefully(app, stop_accepting=server.close, grace=config.shutdown_grace_seconds)
        server.stop(timeout=0.5)
        stopped.set()

    gevent.signal_handler(signal.SIGTERM, stop, signal.SIGTERM)
    gevent.signal_handler(signal.SIGINT, stop, signal.SIGINT)
    try:
        server.start()
    except OSError as error:  # the port is taken, or not ours to bind
        why = os.strerror(error.errno) if error.errno else error
        print(f"nane: cannot listen on {config.addr}: {why}", file=sys.stderr)
        return 2
    log.info("event=listening addr=%s:%d kozma=%s", config.host, server.server_port, config.kozma)
    stopped.wait()
    log.info("event=stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
