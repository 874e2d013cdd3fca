"""`python -m app`: the embedded default — one process, rooms in memory, port 8022."""

from gevent import monkey

monkey.patch_all()

import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402

from app import create_app  # noqa: E402
from app import logs  # noqa: E402
from app.config import ConfigError, load  # noqa: E402
from app.server import make_server  # noqa: E402

log = logging.getLogger("nane")


def main(argv: list[str] | None = None) -> int:
    logs.setup()
    try:
        config = load(sys.argv[1:] if argv is None else argv)
    except ConfigError as error:
        print(f"nane: {error}", file=sys.stderr)
        return 2
    app = create_app(config)
    server = make_server(app, config.host, config.port)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    gevent.signal_handler(signal.SIGINT, server.stop)
    server.start()
    log.info("event=listening addr=%s:%d kozma=%s", config.host, server.server_port, config.kozma)
    server.serve_forever()
    log.info("event=stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
