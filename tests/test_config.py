"""Configuration parsing, without a server: every setting gets its declared type, or a clear error."""

from __future__ import annotations

import dataclasses

import pytest

from app.config import TYPES, Config, ConfigError, env_name, load

FIELDS = dataclasses.fields(Config)


def of_type(kind: type) -> list[str]:
    return [f.name for f in FIELDS if TYPES[f.name] is kind]


def test_every_setting_has_a_type_its_default_matches():
    # A type that failed to resolve (say the annotation's text, "int") would match no default.
    for f in FIELDS:
        assert type(f.default) is TYPES[f.name], f.name
    assert of_type(int) and of_type(bool) and of_type(float) and of_type(str)


@pytest.mark.parametrize("key", of_type(int))
def test_every_int_setting_parses_a_number_and_names_itself_when_it_cannot(key):
    variable = env_name(key)
    config = load(["--max-frame-bytes", "1000000"] if key != "max_frame_bytes" else [],
                  {variable: "1000000" if key == "max_frame_bytes" else "7"})
    assert getattr(config, key) == (1000000 if key == "max_frame_bytes" else 7)
    with pytest.raises(ConfigError, match=f"{variable}='x' is not a valid positive integer"):
        load([], {variable: "x"})
    flag = "--" + key.replace("_", "-")
    with pytest.raises(ConfigError, match=f"{flag}='0' is not a valid positive integer"):
        load([flag, "0"], {})


@pytest.mark.parametrize("key", of_type(bool))
def test_every_bool_setting_parses_yes_and_no(key):
    assert getattr(load([], {env_name(key): "yes"}), key) is True
    assert getattr(load([], {env_name(key): "0"}), key) is False
    with pytest.raises(ConfigError, match="is not a valid boolean"):
        load([], {env_name(key): "maybe"})


@pytest.mark.parametrize("key", of_type(float))
def test_every_float_setting_parses_a_number(key):
    assert getattr(load([], {env_name(key): "0.5"}), key) == 0.5
    with pytest.raises(ConfigError, match="is not a valid non-negative number"):
        load([], {env_name(key): "-1"})


def test_limits_are_the_int_settings_named_max_or_seconds():
    limits = Config().limits()
    assert limits["max_rooms"] == 10000 and limits["ping_timeout_seconds"] == 20
    assert all(type(value) is int for value in limits.values())
    assert "kozma_first_delay" not in limits and "addr" not in limits
