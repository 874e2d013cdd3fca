"""The thin shell around the actors: HTTP, the websocket transport, configuration, entry points."""

from __future__ import annotations

import time

from flask import Flask, send_from_directory
from werkzeug.exceptions import HTTPException

from actors.runtime.actor import ActorError
from actors.system import start_chat
from app import errors
from app.api import routes as api
from app.config import Config
from app.ops import controls
from app.ops import service as ops
from app.ops.limits import AddressLimits, trusted_proxies
from app.ops.metrics import Metrics
from app.pages import actor_view
from app.websocket import route as ws


def create_app(config: Config | None = None) -> Flask:
    """Start the chat's actors and build the Flask app that talks to them."""
    config = config or Config()
    errors.setup(config)  # Sentry, when a DSN is configured
    app = Flask(__name__, static_folder="pages/static")
    app.config["NANE"] = config
    app.config["NANE_STARTED_NS"] = time.monotonic_ns()
    metrics = app.extensions["nane_metrics"] = Metrics()
    connections = app.extensions["nane_connections"] = ops.Connections(
        config.max_connections,
        AddressLimits(config.max_connections_per_address,
                      max(config.max_messages_per_second_per_address,
                          config.max_messages_per_second),
                      config.max_resumes_per_second_per_address),
        trusted_proxies(config.forwarded_allow_ips))
    app.extensions["nane"] = start_chat(
        max_rooms=config.max_rooms, max_messages_in_room=config.max_messages_in_room,
        kozma=config.kozma, kozma_first_delay=config.kozma_first_delay,
        kozma_max_pause=config.kozma_max_pause,
        keepalive_tick=max(0.25, min(config.ping_interval_seconds,
                                     config.ping_timeout_seconds) / 4),
        observe_fan_out=metrics.fan_out.observe, redis_url=config.redis_url,
        redis_stream_messages=config.redis_stream_messages,
        max_history_bytes=config.max_history_bytes,
        max_history_bytes_per_address=config.max_history_bytes_per_address,
        max_rooms_per_address=config.max_rooms_per_address,
        replay_messages=config.max_outbox_messages - 1, replay_bytes=config.max_outbox_bytes)
    metrics.watch(app.extensions["nane"], connections)
    if app.extensions["nane"].store is not None:  # /readyz asks Redis too
        app.extensions["nane_ready_checks"] = {"redis": app.extensions["nane"].store.ping}

    app.register_blueprint(api.bp)
    app.register_blueprint(ws.bp)
    app.register_blueprint(actor_view.bp)
    app.register_blueprint(ops.bp)
    controls.install(app)
    app.after_request(api.add_cors)
    app.register_error_handler(HTTPException, api.api_error)
    app.register_error_handler(ActorError, api.actor_unavailable)
    if config.redis_url:
        from actors.shared_rooms.store import StoreError

        app.register_error_handler(StoreError, api.storage_unavailable)

    @app.route("/")
    def index():
        return send_from_directory(app.static_folder, "index.html")

    return app
