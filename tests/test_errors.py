"""Error reporting (app/errors.py) with the real sentry-sdk, sending to a receiver on loopback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, receive, send
from tests.sentry_receiver import SECRET_TEXT, SECRET_USER, SentryReceiver

pytest.importorskip("sentry_sdk")


@pytest.fixture
def sentry():
    receiver = SentryReceiver()
    yield receiver
    receiver.close()


def run_probe(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.sentry_probe", *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                               "NO_PROXY": "127.0.0.1"})


def test_actor_failures_crashes_and_request_errors_arrive_tagged_without_chat_data(sentry):
    probe = run_probe("--sentrydsn", sentry.dsn)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    events = sentry.wait_for(3, timeout=10)
    by_actor = {event.get("tags", {}).get("actor"): event for event in events}
    failed = by_actor["room:probe"]
    assert failed["level"] == "error"
    assert failed["exception"]["values"][-1]["type"] == "ValueError"
    assert failed["tags"]["logger"] == "nane.actors"
    crashed = by_actor["session:probe"]
    assert crashed["tags"]["logger"] == "nane.supervisor"
    assert crashed["exception"]["values"][-1]["type"] == "Crash"
    request = [e for e in events if "request" in e]
    assert request and request[0]["exception"]["values"][-1]["value"] == "a request failed"
    assert request[0]["request"]["url"].endswith("/boom")
    everything = b"".join(sentry.raw)
    assert SECRET_TEXT.encode() not in everything and SECRET_USER.encode() not in everything


def test_without_a_dsn_sentry_is_not_even_imported():
    check = ("import sys; from app import create_app; from app.config import load; "
             "create_app(load([], {})); assert 'sentry_sdk' not in sys.modules, 'imported'")
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_server_with_sentry_dsn_in_its_environment_reports_and_still_chats(start_server, sentry):
    server = start_server(env={"SENTRY_DSN": sentry.dsn})
    assert "event=sentry_on send_pii=False" in server.log()
    ws = server.connect("ann")
    send(ws, room="r", text="hello")
    assert receive(ws)["text"] == "hello"
