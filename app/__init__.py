"""The thin shell around the actors: HTTP, the websocket transport, configuration, entry points."""

from __future__ import annotations

import time

from flask import Flask, Response, send_from_directory
from werkzeug.exceptions import HTTPException

from actors.system import ActorError, ConnectionLimits, start_chat
from app import door, errors
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
    metrics = Metrics()
    connections = ops.Connections(
        config.max_connections,
        AddressLimits(config.max_connections_per_address,
                      max(config.max_messages_per_second_per_address,
                          config.max_messages_per_second),
                      config.max_resumes_per_second_per_address),
        trusted_proxies(config.forwarded_allow_ips))
    chat = start_chat(
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
        replay_messages=config.max_outbox_messages - 1, replay_bytes=config.max_outbox_bytes,
        limits=ConnectionLimits(
            max_room_title_length=config.max_room_title_length,
            max_message_length=config.max_message_length, max_id_length=config.max_id_length,
            messages_per_second=config.max_messages_per_second,
            max_flood_seconds=config.max_flood_seconds,
            max_outbox=config.max_outbox_messages, max_outbox_bytes=config.max_outbox_bytes,
            ping_interval=config.ping_interval_seconds,
            ping_timeout=config.ping_timeout_seconds))
    metrics.watch(chat, connections)
    door.install(app, door.Nane(config=config, chat=chat, connections=connections,
                                metrics=metrics, controls=controls.make(config),
                                view_cache=actor_view.ViewCache()))

    app.register_blueprint(api.bp)
    app.register_blueprint(ws.bp)
    app.register_blueprint(actor_view.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(controls.bp)
    app.after_request(api.add_cors)
    app.register_error_handler(HTTPException, api.api_error)
    app.register_error_handler(ActorError, api.actor_unavailable)
    for storage_error in chat.storage_errors:
        app.register_error_handler(storage_error, api.storage_unavailable)

    @app.route("/")
    def index() -> Response:
        return send_from_directory(app.static_folder or "", "index.html")

    return app
