"""The app's per-process objects, stored once on the Flask app and reached through one typed accessor.

A Flask extension's habit (`init_app`, then one accessor): `create_app` builds a
`Nane` and `install`s it; views call `nane()` (or `chat()` for the chat's
door, actors/system.py) instead of looking strings up in `current_app.extensions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, current_app

if TYPE_CHECKING:  # the modules below use this one: only their types are needed here
    from actors.system import Chat
    from app.config import Config
    from app.ops.controls import Controls
    from app.ops.metrics import Metrics
    from app.ops.service import Connections
    from app.pages.actor_view import ViewCache

KEY = "nane"


@dataclass(frozen=True, slots=True)
class Nane:
    """Everything one app holds for its whole life.

    Args:
        config: the configuration it was started with.
        chat: the chat's door.
        connections: the open websockets and the per-address limits.
        metrics: the Prometheus series.
        controls: the fault controls' token and memory (None when they are off).
        view_cache: the actor view's last answer.
    """

    config: Config
    chat: Chat
    connections: Connections
    metrics: Metrics
    controls: Controls | None
    view_cache: ViewCache


def install(app: Flask, nane: Nane) -> None:
    """Store `nane` on `app`, once."""
    app.extensions[KEY] = nane


def of(app: object) -> Nane | None:
    """The `Nane` of a WSGI app, if it is one of ours (the server's handler asks this)."""
    extensions = getattr(app, "extensions", None)
    found = extensions.get(KEY) if isinstance(extensions, dict) else None
    return found if isinstance(found, Nane) else None


def nane() -> Nane:
    """The current app's objects (inside a request or an app context)."""
    found: Nane = current_app.extensions[KEY]
    return found


def chat() -> Chat:
    """The current app's chat."""
    return nane().chat
