"""gunicorn settings for the Procfile deploy (and `gunicorn -k gevent app.wsgi:app`).

Rooms live in one process's memory, so exactly one worker may serve them:
Heroku sets WEB_CONCURRENCY to 2 or more, which would split the rooms in two,
so it is ignored here.
"""

import os

bind = "0.0.0.0:" + os.environ.get("PORT", "8022")
workers = 1  # never WEB_CONCURRENCY: the rooms are in this one process
worker_connections = 20000
timeout = 30
graceful_timeout = 10
keepalive = 75
accesslog = None
control_socket_disable = True  # one server per dyno; nothing to control, and no shared path to race for
errorlog = "-"
loglevel = "info"
