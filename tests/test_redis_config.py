"""Configuration of the Redis path: which variable wins, what a bad URL says, gunicorn's workers."""

from __future__ import annotations

import os
import runpy

import pytest

from actors.shared_rooms.store import redact
from app.config import ConfigError, load
from tests.conftest import ROOT


def test_nane_redis_url_then_redis_url_then_none():
    assert load([], {}).redis_url == ""
    assert load([], {"REDIS_URL": "redis://h:1/0"}).redis_url == "redis://h:1/0"
    assert load([], {"REDIS_URL": "redis://h:1/0",
                     "NANE_REDIS_URL": "redis://mine:2/3"}).redis_url == "redis://mine:2/3"
    assert load(["--redis-url", "unix:///tmp/r.sock"],
                {"REDIS_URL": "redis://h:1"}).redis_url == "unix:///tmp/r.sock"


def test_bad_redis_url_names_its_source():
    with pytest.raises(ConfigError, match="REDIS_URL='localhost:6379' is not a valid redis://"):
        load([], {"REDIS_URL": "localhost:6379"})
    with pytest.raises(ConfigError, match="--redis-url='http://x'"):
        load(["--redis-url", "http://x"], {})


def test_logged_url_hides_the_password():
    assert redact("redis://:s3cret@host:6380/1") == "redis://:***@host:6380/1"
    assert redact("rediss://user:s3cret@host/0") == "rediss://user:***@host/0"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize("env, workers", [
    ({"WEB_CONCURRENCY": "3"}, 1),
    ({"WEB_CONCURRENCY": "3", "REDIS_URL": "redis://127.0.0.1:1/0"}, 3),
    ({"WEB_CONCURRENCY": "2", "NANE_REDIS_URL": "redis://127.0.0.1:1/0"}, 2),
    ({"NANE_REDIS_URL": "redis://127.0.0.1:1/0"}, 1),
])
def test_gunicorn_workers_follow_web_concurrency_only_with_redis(monkeypatch, env, workers):
    for name in [n for n in os.environ if n.startswith("NANE_")] + ["REDIS_URL",
                                                                      "WEB_CONCURRENCY"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert settings["workers"] == workers
