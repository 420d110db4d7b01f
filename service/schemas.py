"""Request and response shapes at the HTTP edge: validation of job fields, and job -> JSON.

Validation is strict (a JSON `"5"` is not a priority; form values are converted first, since a
form has only strings) and reports Rails-style `{"field": ["message", ...]}`, as the original
did, so that `{"command": ["can't be blank"]}` keeps its exact wording.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from service.config import QUEUE_NAME_PATTERN, Settings
from service.errors import ValidationFailed

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_ENV_VARS = 100
MAX_ARGV_ITEMS = 1000
BLANK = "can't be blank"
#: what counts as blank: ASCII white space only (the OpenAPI document says the same)
WHITESPACE = " \t\n\r\f\v"


def is_blank(value: str) -> bool:
    return not value.strip(WHITESPACE)


#: fields the server owns: accepted in a request body only to be ignored, as Rails did
SERVER_FIELDS = frozenset(
    {
        "id",
        "state",
        "attempts",
        "exit_code",
        "last_error",
        "locked_at",
        "locked_by",
        "started_at",
        "finished_at",
        "failed_at",
        "created_at",
        "updated_at",
        "output_bytes",
        "output_truncated",
    }
)
INTEGER_FIELDS = ("priority", "timeout", "max_retries")


@dataclass(frozen=True)
class Limits:
    """The limits from the settings that validation enforces."""

    max_timeout: int
    max_retries: int
    max_command_length: int
    max_env_size: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_timeout=settings.max_timeout,
            max_retries=settings.max_retries_limit,
            max_command_length=settings.max_command_length,
            max_env_size=settings.max_env_size,
        )


def _limits(info: ValidationInfo) -> Limits:
    return info.context["limits"]


def _error(message: str) -> PydanticCustomError:
    return PydanticCustomError("jobrunner", message)


def _check_text(value: str, limit: int) -> str:
    if "\x00" in value:
        raise _error("must not contain NUL characters")
    if len(value) > limit:
        raise _error(f"is too long (at most {limit} characters)")
    return value


def parse_time(value: str) -> dt.datetime:
    """An ISO 8601 time as naive UTC; a time without an offset is taken as UTC. At the edges
    of the calendar an offset cannot move it past, it stays at the first or last instant."""
    try:
        parsed = dt.datetime.fromisoformat(value.strip(WHITESPACE).upper())
    except ValueError:
        raise _error("must be an ISO 8601 time such as 2026-11-27T10:45:20Z") from None
    if parsed.tzinfo is None:
        return parsed
    try:
        return parsed.astimezone(dt.UTC).replace(tzinfo=None)
    except OverflowError:
        return dt.datetime.min if parsed.year == dt.MINYEAR else dt.datetime.max


class JobFields(BaseModel):
    """The fields a client may set; every one optional here, required-ness is checked later."""

    model_config = ConfigDict(extra="forbid", strict=True)

    command: str | None = Field(default=None, description="A shell command line, run by /bin/sh -c")
    argv: list[str] | None = Field(
        default=None, description="A program and its arguments, run with no shell"
    )
    queue: str | None = Field(default=None, description="Queue name (default: `default`)")
    priority: int | None = Field(default=None, ge=INT32_MIN, le=INT32_MAX)
    timeout: int | None = Field(default=None, ge=1, description="Seconds per attempt")
    max_retries: int | None = Field(default=None, ge=0, description="Retries after a failure")
    run_at: str | None = Field(default=None, description="ISO 8601 time to run at")
    env: dict[str, str] | None = Field(default=None, description="Added to the environment")

    @field_validator("command")
    @classmethod
    def _command(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if is_blank(value):
            raise _error(BLANK)
        return _check_text(value, _limits(info).max_command_length)

    @field_validator("argv")
    @classmethod
    def _argv(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is None:
            return None
        if not value or is_blank(value[0]):
            raise _error(BLANK)
        if len(value) > MAX_ARGV_ITEMS:
            raise _error(f"has too many items (at most {MAX_ARGV_ITEMS})")
        for item in value:
            if "\x00" in item:
                raise _error("must not contain NUL characters")
        limit = _limits(info).max_command_length
        if sum(len(item) + 1 for item in value) > limit:
            raise _error(f"is too long (at most {limit} characters in all)")
        return value

    @field_validator("queue")
    @classmethod
    def _queue(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not QUEUE_NAME_PATTERN.fullmatch(value):
            raise _error(
                "must start with a letter or _, hold only letters, digits, _ and -, "
                "and be at most 64 characters"
            )
        return value

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: int | None, info: ValidationInfo) -> int | None:
        limit = _limits(info).max_timeout
        if value is not None and value > limit:
            raise _error(f"must be at most {limit} seconds")
        return value

    @field_validator("max_retries")
    @classmethod
    def _max_retries(cls, value: int | None, info: ValidationInfo) -> int | None:
        limit = _limits(info).max_retries
        if value is not None and value > limit:
            raise _error(f"must be at most {limit}")
        return value

    @field_validator("run_at")
    @classmethod
    def _run_at(cls, value: str | None) -> str | None:
        if value is not None:
            parse_time(value)
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str] | None, info: ValidationInfo) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > MAX_ENV_VARS:
            raise _error(f"has too many variables (at most {MAX_ENV_VARS})")
        size = 0
        for name, item in value.items():
            if not ENV_NAME_PATTERN.fullmatch(name):
                raise _error(f"has an invalid variable name {name[:64]!r}")
            if "\x00" in item:
                raise _error(f"{name} must not contain NUL characters")
            size += len(name) + len(item) + 2
        limit = _limits(info).max_env_size
        if size > limit:
            raise _error(f"is too large (at most {limit} characters in all)")
        return value


@dataclass(frozen=True)
class JobSpec:
    """A validated job to create."""

    command: str
    argv: list[str] | None
    queue: str
    priority: int
    timeout: int
    max_retries: int
    run_at: dt.datetime | None
    env: dict[str, str] | None


_MESSAGES = {
    "missing": BLANK,
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "list_type": "must be an array of strings",
    "dict_type": "must be an object of string values",
    "extra_forbidden": "is not a known field",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
}


def _translate(exc: ValidationError) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for error in exc.errors():
        loc = error["loc"]
        field = str(loc[0]) if loc else "job"
        if error["type"] == "jobrunner":
            message = error["msg"]
        else:
            template = _MESSAGES.get(error["type"], error["msg"])
            message = template.format(**error.get("ctx", {}))
        if len(loc) > 1:
            message = f"item {loc[1]} {message}" if field == "argv" else f"{loc[1]} {message}"
        errors.setdefault(field, []).append(message)
    return errors


def _validate(data: dict[str, Any], limits: Limits) -> JobFields:
    known = {key: value for key, value in data.items() if key not in SERVER_FIELDS}
    try:
        return JobFields.model_validate(known, context={"limits": limits})
    except ValidationError as exc:
        raise ValidationFailed(_translate(exc)) from None


def coerce_json_fields(data: dict[str, Any]) -> dict[str, Any]:
    """JSON has one number type: 82.0 is an integer, as JSON Schema says (true is not)."""
    converted = dict(data)
    for name in INTEGER_FIELDS:
        value = converted.get(name)
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
            converted[name] = int(value)
    return converted


def coerce_form_fields(data: dict[str, Any]) -> dict[str, Any]:
    """A form carries only strings: turn the integer fields into ints where they are ones."""
    converted = dict(data)
    for name in INTEGER_FIELDS:
        value = converted.get(name)
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d{1,19}\s*", value):
            converted[name] = int(value)
    return converted


def parse_create(data: dict[str, Any], settings: Settings) -> JobSpec:
    """Validate the fields of a new job; raise ValidationFailed with every problem found."""
    fields = _validate(data, Limits.from_settings(settings))
    if fields.command is None and fields.argv is None:
        raise ValidationFailed({"command": [BLANK]})
    if fields.command is not None and fields.argv is not None:
        raise ValidationFailed({"argv": ["cannot be given together with command"]})
    return JobSpec(
        command=fields.command if fields.command is not None else shlex.join(fields.argv or []),
        argv=fields.argv,
        queue=fields.queue or "default",
        priority=fields.priority if fields.priority is not None else 0,
        timeout=fields.timeout if fields.timeout is not None else settings.default_timeout,
        max_retries=(
            fields.max_retries if fields.max_retries is not None else settings.default_max_retries
        ),
        run_at=parse_time(fields.run_at) if fields.run_at is not None else None,
        env=fields.env,
    )


EDITABLE_FIELDS = ("command", "argv", "queue", "priority", "timeout", "max_retries", "run_at")


def parse_edit(data: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Validate an edit; return the column values to change (at least one)."""
    if not data:
        raise ValidationFailed({"job": ["give at least one field to change"]})
    if "env" in data:
        raise ValidationFailed({"env": ["cannot be changed after the job is created"]})
    fields = _validate(data, Limits.from_settings(settings))
    given = fields.model_dump(exclude_unset=True)
    if "command" in given and given["command"] is None:
        raise ValidationFailed({"command": [BLANK]})
    if given.get("command") is not None and given.get("argv") is not None:
        raise ValidationFailed({"argv": ["cannot be given together with command"]})
    changes: dict[str, Any] = {}
    for name in EDITABLE_FIELDS:
        if name not in given or given[name] is None:
            continue
        changes[name] = given[name]
    if "command" in changes:
        changes["argv"] = None
    elif "argv" in changes:
        changes["command"] = shlex.join(changes["argv"])
    if "run_at" in changes:
        changes["run_at"] = parse_time(changes["run_at"])
    return changes


# --- responses ----------------------------------------------------------------------------


def format_time(value: dt.datetime | None) -> str | None:
    """UTC, ISO 8601 with milliseconds and Z, as API.md section 2 says."""
    if value is None:
        return None
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}"
        f":{value.second:02d}.{value.microsecond // 1000:03d}Z"
    )


JOB_TIME_FIELDS = (
    "run_at",
    "locked_at",
    "started_at",
    "finished_at",
    "failed_at",
    "created_at",
    "updated_at",
)


def job_to_json(job: Any) -> dict[str, Any]:
    """The public job resource (never the env: its values may be secrets)."""
    return {
        "id": job.id,
        "command": job.command,
        "argv": job.argv,
        "queue": job.queue,
        "priority": job.priority,
        "state": job.state,
        "attempts": job.attempts,
        "max_retries": job.max_retries,
        "timeout": job.timeout,
        "exit_code": job.exit_code,
        "last_error": job.last_error,
        "run_at": format_time(job.run_at),
        "locked_at": format_time(job.locked_at),
        "locked_by": job.locked_by,
        "started_at": format_time(job.started_at),
        "finished_at": format_time(job.finished_at),
        "failed_at": format_time(job.failed_at),
        "created_at": format_time(job.created_at),
        "updated_at": format_time(job.updated_at),
        "cancel_requested": job.cancel_requested_at is not None,
        "output_bytes": job.output_bytes,
        "output_truncated": job.output_offset > 0,
    }


ListOrder = Literal["asc", "desc"]
