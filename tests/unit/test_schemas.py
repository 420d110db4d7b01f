"""Validation of job fields, and the job resource's JSON."""

from __future__ import annotations

import datetime as dt

import pytest

from service.config import Settings
from service.errors import ValidationFailed
from service.web.schemas import coerce_form_fields, format_time, parse_create, parse_edit

SETTINGS = Settings(default_timeout=600, default_max_retries=1, max_timeout=3600)


def errors_of(data: dict, edit: bool = False) -> dict[str, list[str]]:
    with pytest.raises(ValidationFailed) as caught:
        (parse_edit if edit else parse_create)(data, SETTINGS)
    return caught.value.errors


def test_defaults_come_from_the_settings() -> None:
    spec = parse_create({"command": "bin/hello_world.sh"}, SETTINGS)
    assert (spec.queue, spec.priority, spec.timeout, spec.max_retries) == ("default", 0, 600, 1)
    assert spec.argv is None and spec.run_at is None and spec.env is None


@pytest.mark.parametrize("command", [None, "", "   "])
def test_a_blank_or_missing_command_is_refused_as_the_original_did(command: str | None) -> None:
    data = {} if command is None else {"command": command}
    assert errors_of(data) == {"command": ["can't be blank"]}


def test_argv_is_joined_with_shell_quoting_for_display() -> None:
    spec = parse_create({"argv": ["echo", "a b", "$X"]}, SETTINGS)
    assert spec.command == "echo 'a b' '$X'"
    assert spec.argv == ["echo", "a b", "$X"]


def test_command_and_argv_together_are_refused() -> None:
    assert "argv" in errors_of({"command": "x", "argv": ["x"]})


def test_types_are_strict_in_json() -> None:
    errors = errors_of({"command": "x", "priority": "5", "timeout": 1.5, "max_retries": True})
    assert errors == {
        "priority": ["must be an integer"],
        "timeout": ["must be an integer"],
        "max_retries": ["must be an integer"],
    }


def test_form_values_become_integers_where_they_are_integers() -> None:
    data = coerce_form_fields({"command": "x", "priority": "5", "timeout": "abc"})
    assert data["priority"] == 5
    assert "timeout" in errors_of(data)


def test_ranges_and_names() -> None:
    errors = errors_of(
        {
            "command": "x",
            "timeout": 0,
            "max_retries": 1000,
            "queue": "bad queue!",
            "priority": 2**40,
        }
    )
    assert errors["timeout"] == ["must be at least 1"]
    assert errors["max_retries"] == ["must be at most 100"]
    assert "queue" in errors
    assert errors["priority"][0].startswith("must be at most")


def test_timeout_above_the_server_maximum() -> None:
    assert errors_of({"command": "x", "timeout": 3601}) == {
        "timeout": ["must be at most 3600 seconds"]
    }


def test_unknown_fields_are_refused_and_server_fields_ignored() -> None:
    assert errors_of({"command": "x", "priorty": 1}) == {"priorty": ["is not a known field"]}
    spec = parse_create({"command": "x", "state": "succeeded", "id": 9, "attempts": 3}, SETTINGS)
    assert spec.command == "x"


def test_env_names_and_values() -> None:
    assert "env" in errors_of({"command": "x", "env": {"1BAD": "v"}})
    assert errors_of({"command": "x", "env": {"A": 1}}) == {"env": ["A must be a string"]}
    spec = parse_create({"command": "x", "env": {"TOKEN": "s3cret"}}, SETTINGS)
    assert spec.env == {"TOKEN": "s3cret"}


def test_nul_characters_are_refused() -> None:
    assert "command" in errors_of({"command": "echo \x00"})
    assert "argv" in errors_of({"argv": ["echo", "\x00"]})


def test_run_at_is_parsed_as_utc() -> None:
    spec = parse_create({"command": "x", "run_at": "2030-01-02T03:04:05+02:00"}, SETTINGS)
    assert spec.run_at == dt.datetime(2030, 1, 2, 1, 4, 5)
    spec = parse_create({"command": "x", "run_at": "2030-01-02T03:04:05Z"}, SETTINGS)
    assert spec.run_at == dt.datetime(2030, 1, 2, 3, 4, 5)
    assert "run_at" in errors_of({"command": "x", "run_at": "tomorrow"})


def test_edit_returns_only_the_changes() -> None:
    assert parse_edit({"priority": 3}, SETTINGS) == {"priority": 3}
    assert parse_edit({"command": "y"}, SETTINGS) == {"command": "y", "argv": None}
    assert parse_edit({"argv": ["a", "b c"]}, SETTINGS) == {
        "argv": ["a", "b c"],
        "command": "a 'b c'",
    }
    assert errors_of({"command": ""}, edit=True) == {"command": ["can't be blank"]}
    assert "env" in errors_of({"env": {"A": "b"}}, edit=True)


def test_times_have_milliseconds_and_z() -> None:
    assert format_time(dt.datetime(2026, 11, 27, 10, 45, 20, 123456)) == "2026-11-27T10:45:20.123Z"
    assert format_time(None) is None
