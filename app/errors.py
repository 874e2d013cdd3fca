"""Error reporting to Sentry, as the original server did (`--sentrydsn`, `SENTRY_DSN`).

Off without a DSN, and then `sentry_sdk` is never imported. With one, the
maintained `sentry-sdk` reports:

- unhandled exceptions in requests (its Flask integration);
- actor failures and the crashes a supervisor sees, tagged with the actor's
  name. `actors/` knows nothing of Sentry: actors already log a failure
  (`event=actor_failed`, with the exception) and supervisors a restart or a
  give-up, each with the actor's name in the record's `extra` (`record.actor`),
  so a logging handler installed here turns those lines into events.

Chat content stays out of Sentry unless the operator asks (`sentry_send_pii`):
no local variables, no breadcrumbs (log lines carry usernames), no request
query string or body (`/ws?username=...`), no user, and the log line's
template rather than its arguments.
"""

from __future__ import annotations

import logging
from typing import Any

from app.config import Config

log = logging.getLogger("nane.errors")

# Loggers whose warnings are crashes too: a supervisor restarting an actor.
CRASH_LOGGERS = ("nane.supervisor",)


def setup(config: Config) -> bool:
    """Start reporting when a DSN is configured; True when it is on."""
    if not config.sentry_dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.flask import FlaskIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration

    pii = config.sentry_send_pii
    sentry_sdk.init(
        dsn=config.sentry_dsn,
        integrations=[FlaskIntegration(),
                      # events come from ActorFailures below, with tags; log lines
                      # become breadcrumbs only when the operator allows chat data
                      LoggingIntegration(level=logging.INFO if pii else None, event_level=None)],
        send_default_pii=pii,
        include_local_variables=pii,
        max_breadcrumbs=100 if pii else 0,
        before_send=None if pii else strip_chat_data,  # type: ignore[arg-type]  # Event is a dict
    )
    logging.getLogger("nane").addHandler(ActorFailures(pii))
    log.info("event=sentry_on send_pii=%s", pii)
    return True


class ActorFailures(logging.Handler):
    """Turns nane's error lines, and supervisors' restart warnings, into Sentry events."""

    def __init__(self, send_pii: bool) -> None:
        super().__init__(level=logging.WARNING)
        self.send_pii = send_pii

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.ERROR and record.name not in CRASH_LOGGERS:
            return
        import sentry_sdk

        tags = {"logger": record.name}
        actor = actor_name(record)
        if actor is not None:
            tags["actor"] = actor
        level: Any = record.levelname.lower()  # one of Sentry's level names
        error = _exception_of(record)
        if error is not None:
            sentry_sdk.capture_exception(error, tags=tags, level=level)
        else:
            text = record.getMessage() if self.send_pii else str(record.msg)
            sentry_sdk.capture_message(text, tags=tags, level=level)


def actor_name(record: logging.LogRecord) -> str | None:
    """The actor a log line is about: the runtime logs it as `extra={"actor": name}`."""
    name = getattr(record, "actor", None)
    return name if isinstance(name, str) else None


def _exception_of(record: logging.LogRecord) -> Any:
    if record.exc_info:
        return record.exc_info
    for arg in record.args if isinstance(record.args, tuple) else ():
        if isinstance(arg, BaseException):  # a supervisor names how the run ended
            return arg
    return None


def strip_chat_data(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    """`before_send` without `sentry_send_pii`: drop every field that can carry chat data."""
    request = event.get("request")
    if request:
        for key in ("query_string", "data", "cookies", "env"):
            request.pop(key, None)
        if "url" in request:
            request["url"] = request["url"].split("?", 1)[0]
    for key in ("user", "breadcrumbs", "extra"):
        event.pop(key, None)
    if "logentry" in event:
        event["logentry"].pop("params", None)
    for exception in (event.get("exception") or {}).get("values", []):
        for frame in (exception.get("stacktrace") or {}).get("frames", []):
            frame.pop("vars", None)
    return event
