"""The client's option values: durations, --at times, --env, and the body of POST /jobs."""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest

from client.args import format_utc, job_fields, parse_at, parse_duration, parse_env

NOW = dt.datetime(2026, 11, 27, 10, 45, 20, 123456, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("10m", 600), ("1h30m", 5400), ("2d", 172800), (" 1H ", 3600)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "1.5h", "10 m", "-5", "1w", "h1"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_times_are_sent_as_utc_with_milliseconds_and_z() -> None:
    assert format_utc(NOW) == "2026-11-27T10:45:20.123Z"


def test_at_relative_is_from_now() -> None:
    assert parse_at("+10m", now=NOW) == "2026-11-27T10:55:20.123Z"
    assert parse_at("+1h30m", now=NOW) == "2026-11-27T12:15:20.123Z"


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ("2026-11-27T10:45:00Z", "2026-11-27T10:45:00.000Z"),
        ("2026-11-27T11:45:00+01:00", "2026-11-27T10:45:00.000Z"),
        ("2026-11-27 11:45+01:00", "2026-11-27T10:45:00.000Z"),
    ],
)
def test_at_with_an_offset_is_converted_to_utc(text: str, sent: str) -> None:
    assert parse_at(text) == sent


def test_at_without_an_offset_is_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        assert parse_at("2026-11-27T11:45") == "2026-11-27T10:45:00.000Z"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert "TZ" not in os.environ


@pytest.mark.parametrize("text", ["tomorrow", "+", "+soon", "27/11/2026"])
def test_bad_times_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_at(text)


def test_env_items_set_or_pass_on_variables() -> None:
    env = parse_env(["A=1", "B=x=y", "EMPTY=", "HERE", "A=2"], {"HERE": "from here"})
    assert env == {"A": "2", "B": "x=y", "EMPTY": "", "HERE": "from here"}


def test_env_items_without_a_name_or_unset_are_refused() -> None:
    with pytest.raises(ValueError, match="no variable name"):
        parse_env(["=1"], {})
    with pytest.raises(ValueError, match="MISSING is not set here"):
        parse_env(["MISSING"], {})


def test_argv_is_sent_as_argv_and_a_shell_line_as_command() -> None:
    assert job_fields(["make", "test"], None) == {"argv": ["make", "test"]}
    assert job_fields([], "make test | tee log") == {"command": "make test | tee log"}


def test_only_the_options_given_are_sent() -> None:
    fields = job_fields(
        ["true"],
        None,
        queue="ci",
        priority=-5,
        timeout=600,
        retries=0,
        env={"A": "1"},
        run_at="2026-11-27T10:45:00.000Z",
    )
    assert fields == {
        "argv": ["true"],
        "queue": "ci",
        "priority": -5,
        "timeout": 600,
        "max_retries": 0,
        "env": {"A": "1"},
        "run_at": "2026-11-27T10:45:00.000Z",
    }
    assert job_fields(["true"], None, env={}) == {"argv": ["true"]}


def test_exactly_one_of_argv_and_shell() -> None:
    with pytest.raises(ValueError, match="not both"):
        job_fields(["make"], "make")
    with pytest.raises(ValueError, match="no command"):
        job_fields([], None)
