"""gunicorn settings for the Procfile deploy (and `gunicorn -k gevent app.wsgi:app`).

Without Redis the rooms live in one process's memory, so exactly one worker
may serve them: Heroku sets WEB_CONCURRENCY to 2 or more, which would split
the rooms in two, so it is ignored then. With NANE_REDIS_URL (or REDIS_URL)
every worker serves the same rooms, and WEB_CONCURRENCY workers are started.
"""

import importlib.util
import os
import sys


def _load_nane_config():
    """NANE_* from the environment, read by app/config.py as the app reads them.

    That one file alone: importing the `app` package here, in the arbiter,
    would import gevent-dependent modules before the worker monkey-patches.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "app", "config.py")
    spec = importlib.util.spec_from_file_location("_nane_config", path)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load([])


_nane = _load_nane_config()

bind = "0.0.0.0:" + os.environ.get("PORT", "8022")
if _nane.redis_url:
    workers = int(os.environ.get("WEB_CONCURRENCY") or 1)  # rooms are shared through Redis
else:
    workers = 1  # never WEB_CONCURRENCY: the rooms are in this one process
worker_connections = 20000
timeout = 30
graceful_timeout = _nane.shutdown_grace_seconds  # after that gunicorn kills the worker
keepalive = _nane.http_idle_timeout_seconds  # `-k gevent`: the deadline for a request head
accesslog = None
control_socket_disable = True  # one server per dyno; nothing to control, and no shared path to race for
errorlog = "-"
loglevel = "info"


def post_worker_init(worker):
    """Our websocket handler (401/503 before the upgrade, request deadline) and graceful SIGTERM."""
    from app.server import prepare_gunicorn_worker

    prepare_gunicorn_worker(worker)
