"""gunicorn settings for the Procfile deploy (and `gunicorn -k gevent app.wsgi:app`).

Without Redis the rooms live in one process's memory, so exactly one worker
may serve them: Heroku sets WEB_CONCURRENCY to 2 or more, which would split
the rooms in two, so it is ignored then. With NANE_REDIS_URL (or REDIS_URL)
every worker serves the same rooms, and WEB_CONCURRENCY workers are started.
"""

import importlib.util
import os
import sys


def _load_module(package: str, name: str):
    """One file alone (app/config.py, actors/logfmt.py), as the app reads it.

    Importing the `app` or `actors` package here, in the arbiter, would import
    gevent-dependent modules before the worker monkey-patches.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), package, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_nane_{name}", path)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_nane = _load_module("app", "config").load_or_exit([])  # a bad value: one line, exit 2

bind = "0.0.0.0:" + os.environ.get("PORT", "8022")
if _nane.redis_url:
    workers = int(os.environ.get("WEB_CONCURRENCY") or 1)  # rooms are shared through Redis
else:
    workers = 1  # never WEB_CONCURRENCY: the rooms are in this one process
worker_connections = 20000
timeout = 30
graceful_timeout = _nane.shutdown_grace_seconds  # after that gunicorn kills the worker
keepalive = _nane.http_idle_timeout_seconds  # `-k gevent`: the deadline for a request head
forwarded_allow_ips = _nane.forwarded_allow_ips  # one setting for gunicorn and nane (app/ops/limits.py)
accesslog = None
control_socket_disable = True  # one server per dyno; nothing to control, and no shared path to race for
errorlog = "-"
loglevel = "info"
# gunicorn's own lines in the app's format and stream: logfmt on stdout, one line per event.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"logfmt": {"()": _load_module("actors", "logfmt").LogfmtFormatter}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout",
                            "formatter": "logfmt"}},
    "root": {"handlers": ["stdout"], "level": "INFO"},
    "loggers": {"gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
                "gunicorn.access": {"handlers": ["stdout"], "level": "INFO", "propagate": False}},
}


def post_worker_init(worker):
    """Our websocket handler (401/503 before the upgrade, request deadline) and graceful SIGTERM."""
    from app.server import prepare_gunicorn_worker

    prepare_gunicorn_worker(worker)
