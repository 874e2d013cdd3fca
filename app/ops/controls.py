"""Fault controls: break the chat on purpose, for a lesson or to test a client.

Off unless the server starts with `--controls` (`NANE_CONTROLS=1`): then every
endpoint here answers 404, exactly like a path that does not exist, so a
public deploy cannot be broken by anyone. On, they answer only to the token
printed at start (or `NANE_CONTROLS_TOKEN`), sent as `Authorization: Bearer
<token>`; without it, 403. Each control is logged (`event=control`), counted
(`nane_controls_total{control}`) and remembered for the card it touched in
`/api/actors`.

The controls never reach into an actor's state: they use the runtime's own
fault methods on `ActorRef` (`crash`, `pause`, `resume`, `slow_down`, the way
Erlang's `sys:suspend` works on any process), and the chat's door for what
the hub, the registry and a session answer (`Chat.disconnect`, `Chat.forget`,
`Chat.delay_delivery`).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time

import gevent
from flask import Blueprint, Response, abort, current_app, request

from actors import logfmt
from actors.chat.message import encode_result
from actors.system import ActorRef, Chat
from app import door
from app.api.routes import error_response, json_response
from app.config import Config

log = logging.getLogger("nane.controls")

bp = Blueprint("controls", __name__, url_prefix="/api/controls")

ASK_SECONDS = 2.0  # a paused or swamped registry or hub: answer 503 soon rather than hang
MAX_DELAY_MS = 10_000  # slow-down and delivery delay: at most this per message
SILENT_SECONDS = 60.0  # a silent session is dropped (no close frame) after this, by default
MAX_SILENT_SECONDS = 600.0
CRASHES_BEFORE_GIVING_UP = 20  # crash-until-give-up stops trying after this many (it takes 6)
CORE = ("registry", "hub", "kozma")  # a give-up here would stop the whole chat
DISCONNECT_KINDS = list(Chat.DISCONNECT_KINDS)
CONTROLS = ["crash", "crash-until-give-up", "slow", "pause", "resume", "disconnect", "forget",
            "delay"]


class Controls:
    """The token, and what each control last did to which actor (for the actor view)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.touched: dict[str, dict[str, object]] = {}  # actor name -> {"control", "at"}
        self._core_crashes: dict[str, list[float]] = {}

    def allows(self, header: str) -> bool:
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                                   self.token.encode())

    def remember(self, actor: str, control: str) -> None:
        self.touched[actor] = {"control": control, "at": round(time.time(), 3)}
        if len(self.touched) > 1000:  # actors come and go: keep the newest
            del self.touched[next(iter(self.touched))]

    def core_crash_allowed(self, name: str, window: float, budget: int) -> bool:
        """One more crash of a core actor stays within its supervisor's budget."""
        now = time.monotonic()
        recent = [t for t in self._core_crashes.get(name, []) if now - t < window]
        if len(recent) >= budget:
            return False
        self._core_crashes[name] = recent + [now]
        return True


def make(config: Config) -> Controls | None:
    """With `controls` on, make the token and say it once; None when they are off."""
    if not config.controls:
        return None
    token = config.controls_token or secrets.token_urlsafe(18)
    shown = "(NANE_CONTROLS_TOKEN)" if config.controls_token else token
    log.warning("event=controls_on token=%s page=%s "
                "msg=\"fault controls are ON: never on a public server\"", logfmt.value(shown),
                logfmt.value(f"/actors#token={shown}"))
    return Controls(token)


@bp.before_request
def only_with_the_token() -> Response | None:
    controls = door.nane().controls
    if controls is None:
        abort(404)  # off: indistinguishable from a path that does not exist
    if request.method == "OPTIONS":
        return None  # CORS preflight (app/api/routes.py answers it)
    if not controls.allows(request.headers.get("Authorization", "")):
        return error_response("fault controls need the token printed at start: "
                              "Authorization: Bearer <token>", 403)
    return None


@bp.route("", methods=["GET", "POST"])
def overview() -> Response:
    """What the page needs: which controls exist, and the hub's delivery delay."""
    return _answer({"controls": CONTROLS, "disconnect": DISCONNECT_KINDS,
                    "delay_ms": _info(door.chat().hub).get("delay_ms", 0)})


@bp.route("/crash", methods=["POST"])
def crash() -> Response:
    ref = _actor()
    name = ref.name
    window, budget = door.chat().core_crash_budget()  # its supervisor's own limits
    if name in CORE and not _controls().core_crash_allowed(name, window, budget):
        return error_response(f"one more crash now and {name}'s supervisor would give up on it, "
                              f"stopping the whole chat; wait {window:g} s (rooms can be crashed "
                              "until their supervisor gives up)", 409)
    _record("crash", name)
    _crash_once(ref)
    return _answer({"control": "crash", "actor": _info(ref)})


@bp.route("/crash-until-give-up", methods=["POST"])
def crash_until_give_up() -> Response:
    ref = _actor()
    if not ref.name.startswith("room:"):
        return error_response("only a room can be crashed until its supervisor gives up", 409)
    _record("crash-until-give-up", ref.name)
    crashes = 0
    while ref.alive and crashes < CRASHES_BEFORE_GIVING_UP:
        _crash_once(ref)
        crashes += 1
    return _answer({"control": "crash-until-give-up", "crashes": crashes, "actor": _info(ref)})


@bp.route("/slow", methods=["POST"])
def slow() -> Response:
    ref = _actor()
    ms = _number("ms", 0, MAX_DELAY_MS)
    _record("slow", ref.name, f"ms={ms}")
    ref.slow_down(ms / 1000)
    return _answer({"control": "slow", "actor": _info(ref)})


@bp.route("/pause", methods=["POST"], defaults={"control": "pause"})
@bp.route("/resume", methods=["POST"], defaults={"control": "resume"})
def pause_or_resume(control: str) -> Response:
    ref = _actor()
    _record(control, ref.name)
    if control == "pause":
        ref.pause()
    else:
        ref.resume()
    return _answer({"control": control, "actor": _info(ref)})


@bp.route("/disconnect", methods=["POST"])
def disconnect() -> Response:
    ref = _actor()
    if not ref.name.startswith("session:"):
        return error_response("only a session can be disconnected", 409)
    how = str(_param("how") or "1000")
    if how not in DISCONNECT_KINDS:
        return error_response(f"how must be one of {', '.join(DISCONNECT_KINDS)}", 400)
    _record("disconnect", ref.name, f"how={how}")
    silent_for = _number("seconds", 1, MAX_SILENT_SECONDS, SILENT_SECONDS) \
        if how == "silent" else 0.0
    door.chat().disconnect(ref, how, ASK_SECONDS, silent_for)
    return _answer({"control": "disconnect", "how": how, "actor": _info(ref)})


@bp.route("/forget", methods=["POST"])
def forget() -> Response:
    """What a restart does: uptime from zero, no rooms, every connection closed (1001)."""
    chat = door.chat()
    if chat.store is not None:
        return error_response("with Redis the rooms live in Redis: restart the processes and "
                              "empty Redis to forget everything", 409)
    _record("forget", "registry")
    current_app.config["NANE_STARTED_NS"] = time.monotonic_ns()
    rooms, sessions = chat.forget(ASK_SECONDS)
    return _answer({"control": "forget", "rooms": rooms, "sessions": sessions})


@bp.route("/delay", methods=["POST"])
def delay() -> Response:
    ms = _number("ms", 0, MAX_DELAY_MS)
    chat = door.chat()
    _record("delay", chat.hub.name, f"ms={ms}")
    chat.delay_delivery(ms / 1000, ASK_SECONDS)
    return _answer({"control": "delay", "actor": _info(chat.hub)})


# -- helpers -------------------------------------------------------------------

def _controls() -> Controls:
    controls = door.nane().controls
    assert controls is not None, "the controls' routes exist only with the controls installed"
    return controls


def _answer(result: dict[str, object]) -> Response:
    return json_response(encode_result(result))


def _param(key: str) -> object:
    body = request.get_json(silent=True, force=True)
    if isinstance(body, dict) and key in body:
        return body[key]
    return request.args.get(key)


def _number(key: str, low: int, high: float, default: float | None = None) -> float:
    raw = _param(key)
    if raw is None and default is not None:
        return default
    try:
        value = int(raw)  # type: ignore[call-overload]  # a JSON value or a query string
    except (TypeError, ValueError):
        abort(error_response(f"{key} must be an integer from {low} to {int(high)}", 400))
    if not low <= value <= high:
        abort(error_response(f"{key} must be an integer from {low} to {int(high)}", 400))
    return value


def _actor() -> ActorRef:
    """The actor named by `actor` (registry, hub, kozma, room:NAME, session:N), or 404."""
    name = _param("actor")
    if not isinstance(name, str) or not name:
        abort(error_response("actor is required: registry, hub, kozma, room:NAME or session:N",
                             400))
    found = door.chat().find(name, ASK_SECONDS)
    if found is None:
        abort(error_response(f"no actor named {name}", 404))
    return found


def _record(control: str, actor: str, detail: str = "") -> None:
    log.warning("event=control control=%s actor=%s%s remote=%s", control, logfmt.value(actor),
                f" {detail}" if detail else "", request.remote_addr)
    door.nane().metrics.controls.labels(control).inc()
    _controls().remember(actor, control + (f" {detail}" if detail else ""))


def _crash_once(ref: ActorRef) -> None:
    """Crash `ref` and wait until its supervisor has restarted it (or given up on it)."""
    before = ref.stats()["restarts"]
    ref.crash()
    # The crash happens when a worker next runs the actor: after the message in hand,
    # however slow that one is.
    deadline = time.monotonic() + ASK_SECONDS + ref.stats()["slow_ms"] / 1000
    while ref.alive and ref.stats()["restarts"] == before and time.monotonic() < deadline:
        gevent.sleep(0.005)


def _info(ref: ActorRef) -> dict[str, object]:
    """The actor as the view shows it: the runtime's counters and its answer to `Describe`
    (left out when it cannot answer within ASK_SECONDS: slowed down, swamped, stopped)."""
    facts = door.chat().describe(ref, ASK_SECONDS)
    facts.pop("closed_with", None)  # not JSON, and not what a control's caller asked
    return facts
