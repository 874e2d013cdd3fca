"""The WSGI entry point for gunicorn: `gunicorn app.wsgi:app` (see the Procfile)."""

from app import create_app, logs
from app.config import load

logs.setup()
app = create_app(load([]))
