"""Request and response shapes at the HTTP edge: validation of job fields, and job -> JSON.

Validation is strict (a JSON `"5"` is not a priority; form values are converted first, since a
form has only strings) and reports Rails-style `{"field": ["message", ...]}`, as the original
did, so that `{"command": ["can't be blank"]}` keeps its exact wording.

Each rule is written once: as a constraint of a field of `fields_model` (lengths, ranges,
patterns), which both validates and is what the OpenAPI document shows (service.web.openapi
takes its JSON Schema), or, for what JSON Schema cannot say, as a validator of
`JobFieldsBase`. The job resource is `JobResource`, and `job_to_json` writes exactly its fields.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import shlex
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

from service.config import QUEUE_NAME_PATTERN, Settings
from service.destinations import MAX_URL_LENGTH, Refused, check_url
from service.errors import ValidationFailed
from service.jobs import JobSpec
from service.resource import format_time as format_time
from service.resource import job_to_json as job_to_json
from service.states import EndReason, State

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MAX_ENV_VARS = 100
MAX_ARGV_ITEMS = 1000
BLANK = "can't be blank"
#: what counts as blank: ASCII white space only (the OpenAPI document says the same)
WHITESPACE = " \t\n\r\f\v"


def is_blank(value: str) -> bool:
    return not value.strip(WHITESPACE)


#: the message for text that cannot be stored nor given to a process: a lone surrogate, sent
#: as JSON (`"\\ud800"`) or made of a byte that is not UTF-8 (service.web.forms)
NOT_TEXT = "must be valid Unicode text (no lone surrogates, no bytes that are not UTF-8)"
NUL = "must not contain NUL characters"


def is_text(value: str) -> bool:
    """Whether `value` is valid Unicode (encodable as UTF-8: no lone surrogate)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: fields the server owns: accepted in a request body only to be ignored, as Rails did
SERVER_FIELDS = frozenset(
    {
        "id",
        "state",
        "attempts",
        "exit_code",
        "last_error",
        "end_reason",
        "exit_signal",
        "locked_at",
        "locked_by",
        "started_at",
        "finished_at",
        "failed_at",
        "created_at",
        "updated_at",
        "output_bytes",
        "output_truncated",
        "cancel_requested",
        "schedule_id",
    }
)
INTEGER_FIELDS = ("priority", "timeout", "max_retries", "concurrency_limit")


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
    assert info.context is not None
    limits: Limits = info.context["limits"]
    return limits


def _error(message: str) -> PydanticCustomError:
    return PydanticCustomError("jobrunner", message)


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


#: ECMA-262 patterns of the constraints below (JSON Schema and pydantic read them alike)
NUL_FREE = "^[^\\u0000]*$"
NON_BLANK = "^[^\\u0000]*[^ \\t\\n\\r\\f\\v\\u0000][^\\u0000]*$"
QUEUE_PATTERN = QUEUE_NAME_PATTERN.pattern
ENV_NAME = "^[A-Za-z_][A-Za-z0-9_]*$"
#: an http(s) URL with a host and no white space or control characters (the rest, such as the
#: refused addresses, is service.destinations.check_url's, after validation)
URL_PATTERN = (
    "^[Hh][Tt][Tt][Pp][Ss]?://[^\\u0000-\\u0020\\u007f/?#@]+([/?#][^\\u0000-\\u0020\\u007f]*)?$"
)
QUEUE_MESSAGE = (
    "must start with a letter or _, hold only letters, digits, _ and -, and be at most 64 "
    "characters"
)

CONCURRENCY_KEY_MESSAGE = QUEUE_MESSAGE
LIMIT_NEEDS_KEY = "needs a concurrency_key"

Text = Annotated[str, StringConstraints(pattern=NUL_FREE)]
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME)]


def _env_schema(schema: dict[str, Any]) -> None:
    """An env object as JSON Schema says it: names by `propertyNames` (pydantic writes
    `patternProperties`, which would let other names through)."""
    (values,) = schema.pop("patternProperties").values()
    schema["propertyNames"] = {"pattern": ENV_NAME}
    schema["additionalProperties"] = values


def _argv_schema(schema: dict[str, Any]) -> None:
    """The program (the first item) may not be blank."""
    schema["prefixItems"] = [{"type": "string", "pattern": NON_BLANK}]


class JobFieldsBase(BaseModel):
    """Rules that JSON Schema cannot say (sizes in all, a parseable time): the rest are the
    constraints of the fields (`fields_model`), which the OpenAPI document shows as they are."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("argv", check_fields=False)
    @classmethod
    def _argv(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is None:
            return None
        if is_blank(value[0]):
            raise _error(BLANK)
        limit = _limits(info).max_command_length
        if sum(len(item) + 1 for item in value) > limit:
            raise _error(f"is too long (at most {limit} characters in all)")
        return value

    @field_validator("run_at", check_fields=False)
    @classmethod
    def _run_at(cls, value: str | None) -> str | None:
        if value is not None:
            if "\x00" in value:  # fromisoformat would overlook it
                raise _error(NUL)
            parse_time(value)
        return value

    @field_validator("env", check_fields=False)
    @classmethod
    def _env(cls, value: dict[str, str] | None, info: ValidationInfo) -> dict[str, str] | None:
        if value is None:
            return None
        limit = _limits(info).max_env_size
        if sum(len(name) + len(item) + 2 for name, item in value.items()) > limit:
            raise _error(f"is too large (at most {limit} characters in all)")
        return value


@functools.cache
def fields_model(limits: Limits) -> type[JobFieldsBase]:
    """The fields a client may set, every one optional (required-ness is checked later), with
    these limits: it validates requests, and the OpenAPI document shows its JSON Schema."""
    command = Annotated[
        str,
        StringConstraints(min_length=1, max_length=limits.max_command_length, pattern=NON_BLANK),
        Field(description="A shell command line, run by /bin/sh -c in JOB_HOME"),
    ]
    argv = Annotated[
        list[Text],
        Field(
            min_length=1,
            max_length=MAX_ARGV_ITEMS,
            description="A program and its arguments, run with no shell",
            json_schema_extra=_argv_schema,
        ),
    ]
    queue = Annotated[
        str, StringConstraints(pattern=QUEUE_PATTERN), Field(description="Default: default")
    ]
    priority = Annotated[
        int, Field(ge=INT32_MIN, le=INT32_MAX, description="Lower runs first (default 0)")
    ]
    timeout = Annotated[int, Field(ge=1, le=limits.max_timeout, description="Seconds per attempt")]
    max_retries = Annotated[
        int, Field(ge=0, le=limits.max_retries, description="Retries after a failed attempt")
    ]
    run_at = Annotated[
        str,
        Field(
            description="When to run it (ISO 8601; without an offset: UTC)",
            json_schema_extra={"format": "date-time"},
        ),
    ]
    callback_url = Annotated[
        str,
        StringConstraints(max_length=MAX_URL_LENGTH, pattern=URL_PATTERN),
        Field(
            description=(
                "An http(s) URL that gets a signed POST when the job ends (API.md section 8)"
            ),
            json_schema_extra={"format": "uri"},
        ),
    ]
    env = Annotated[
        dict[EnvName, Text],
        Field(
            max_length=MAX_ENV_VARS,
            description="Added to the command's environment; never shown again",
            json_schema_extra=_env_schema,
        ),
    ]
    concurrency_key = Annotated[
        str,
        StringConstraints(pattern=QUEUE_PATTERN),
        Field(description="At most concurrency_limit jobs with this key run at once"),
    ]
    concurrency_limit = Annotated[
        int,
        Field(ge=1, le=INT32_MAX, description="With concurrency_key (default 1)"),
    ]
    fields: dict[str, Any] = {
        "command": command,
        "argv": argv,
        "queue": queue,
        "priority": priority,
        "timeout": timeout,
        "max_retries": max_retries,
        "run_at": run_at,
        "env": env,
        "concurrency_key": concurrency_key,
        "concurrency_limit": concurrency_limit,
        "callback_url": callback_url,
    }
    return create_model(  # type: ignore[call-overload, no-any-return]
        "JobFields",
        __base__=JobFieldsBase,
        **{name: (kind | None, None) for name, kind in fields.items()},
    )


_MESSAGES = {
    "missing": BLANK,
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "list_type": "must be an array of strings",
    "dict_type": "must be an object of string values",
    "extra_forbidden": "is not a known field",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "string_too_long": "is too long (at most {max_length} characters)",
    "string_too_short": BLANK,
    "too_short": BLANK,
    "string_unicode": NOT_TEXT,
}
#: the messages of one field's constraints, where they say more than the generic ones
_FIELD_MESSAGES = {
    ("timeout", "less_than_equal"): "must be at most {le} seconds",
    ("argv", "too_long"): "has too many items (at most {max_length})",
    ("env", "too_long"): "has too many variables (at most {max_length})",
    ("queue", "string_pattern_mismatch"): QUEUE_MESSAGE,
    ("concurrency_key", "string_pattern_mismatch"): CONCURRENCY_KEY_MESSAGE,
    ("callback_url", "string_pattern_mismatch"): "must be an http or https URL with a host",
}


def _message(field: str, error: Any) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "jobrunner":
        return str(error["msg"])
    if (field, kind) in _FIELD_MESSAGES:
        return _FIELD_MESSAGES[(field, kind)].format(**ctx)
    if kind == "string_pattern_mismatch":  # the NUL_FREE and NON_BLANK patterns
        value = error["input"]
        if isinstance(value, str) and "\x00" in value:
            return NUL
        return BLANK
    return _MESSAGES.get(kind, str(error["msg"])).format(**ctx)


def _translate(exc: ValidationError) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for error in exc.errors():
        loc = error["loc"]
        field = str(loc[0]) if loc else "job"
        if field == "env" and len(loc) == 3 and loc[2] == "[key]":
            if error["type"] == "string_unicode":
                message = f"has a variable name that {NOT_TEXT}"
            else:
                message = f"has an invalid variable name {str(loc[1])[:64]!r}"
        elif len(loc) > 1:
            message = _message(field, error)
            message = f"item {loc[1]} {message}" if field == "argv" else f"{loc[1]} {message}"
        else:
            message = _message(field, error)
        errors.setdefault(field, []).append(message)
    return errors


def _validate(data: dict[str, Any], limits: Limits, settings: Settings) -> Any:
    if settings.unknown_fields == "ignore":  # as the original's strong parameters did
        allowed = fields_model(limits).model_fields
        data = {key: value for key, value in data.items() if key in allowed}
    unnamed = [key for key in data if not is_text(key)]
    if unnamed:  # pydantic would report it without its name
        message = "is not a known field (its name is not valid Unicode text)"
        raise ValidationFailed({key[:64]: [message] for key in unnamed})
    known = {key: value for key, value in data.items() if key not in SERVER_FIELDS}
    try:
        return fields_model(limits).model_validate(known, context={"limits": limits})
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
    fields = _validate(data, Limits.from_settings(settings), settings)
    if fields.command is None and fields.argv is None:
        raise ValidationFailed({"command": [BLANK]})
    if fields.command is not None and fields.argv is not None:
        raise ValidationFailed({"argv": ["cannot be given together with command"]})
    if fields.concurrency_limit is not None and fields.concurrency_key is None:
        raise ValidationFailed({"concurrency_limit": [LIMIT_NEEDS_KEY]})
    key = fields.concurrency_key
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
        concurrency_key=key,
        concurrency_limit=(fields.concurrency_limit or 1) if key is not None else None,
        callback_url=_callback_url(fields.callback_url, settings),
    )


def _callback_url(url: str | None, settings: Settings) -> str | None:
    """A job's callback_url, checked without DNS (service.destinations); 422 if refused."""
    if url is None:
        return None
    if not settings.callbacks_enabled:
        message = "callbacks are off on this server (no JOBRUNNER_CALLBACK_SECRET to sign with)"
        raise ValidationFailed({"callback_url": [message]})
    try:
        check_url(url, settings.callback_allow_list)
    except Refused as exc:
        raise ValidationFailed({"callback_url": [str(exc)]}) from None
    return url


EDITABLE_FIELDS = (
    "command",
    "argv",
    "queue",
    "priority",
    "timeout",
    "max_retries",
    "run_at",
    "concurrency_key",
    "concurrency_limit",
)


def parse_edit(data: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Validate an edit; return the column values to change (at least one)."""
    if not data:
        raise ValidationFailed({"job": ["give at least one field to change"]})
    for name in ("env", "callback_url"):
        if name in data:
            raise ValidationFailed({name: ["cannot be changed after the job is created"]})
    fields = _validate(data, Limits.from_settings(settings), settings)
    given = fields.model_dump(exclude_unset=True)
    if "command" in given and given["command"] is None:
        raise ValidationFailed({"command": [BLANK]})
    if given.get("command") is not None and given.get("argv") is not None:
        raise ValidationFailed({"argv": ["cannot be given together with command"]})
    if given.get("concurrency_limit") is not None and given.get("concurrency_key") is None:
        raise ValidationFailed({"concurrency_limit": [LIMIT_NEEDS_KEY]})
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


Time = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Count = Annotated[int, Field(ge=0)]


class JobResource(BaseModel):
    """The public job resource (API.md section 2), as every endpoint returns it: every field,
    always (null when it does not apply). Never the env: its values may be secrets."""

    model_config = ConfigDict(extra="forbid")  # the document says: these keys and no other

    id: int
    command: str
    argv: list[str] | None
    queue: str
    priority: int
    state: State
    attempts: Count
    max_retries: Count
    timeout: Annotated[int, Field(ge=1)]
    exit_code: int | None
    last_error: str | None
    end_reason: EndReason | None
    exit_signal: int | None
    run_at: Time
    locked_at: Time | None
    locked_by: str | None
    started_at: Time | None
    finished_at: Time | None
    failed_at: Time | None
    created_at: Time
    updated_at: Time
    cancel_requested: bool
    output_bytes: Count
    output_truncated: bool
    concurrency_key: str | None = Field(description="API.md section 6; null: none")
    concurrency_limit: Annotated[int, Field(ge=1)] | None
    schedule_id: int | None = Field(description="The schedule that created it; null: none")
    callback_url: str | None = Field(
        description="Where the event of its final state is POSTed (API.md section 8)"
    )


class QueueResource(BaseModel):
    """A queue as GET /queues shows it (API.md section 11)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    waiting: Count
    running: Count
    oldest_waiting_seconds: Annotated[float, Field(ge=0)] | None
    concurrency: Annotated[int, Field(ge=1)] | None


class DeliveryResource(BaseModel):
    """One delivery attempt of a job's callback event (API.md section 8)."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(description="The webhook-id: the same for every attempt of one event")
    url: str
    attempt: Annotated[int, Field(ge=1)]
    at: Time
    status_code: int | None = Field(description="The answer's status; null when none came")
    error: str | None = Field(description="Why no answer came (or why it was not sent)")
    next_attempt_at: Time | None = Field(description="When it is sent again; null: it is not")


class WorkerResource(BaseModel):
    """A live worker process as GET /workers shows it (API.md section 11)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    host: str
    pid: int
    queues: list[str] | None = Field(description="The queues it serves; null: every queue")
    started_at: Time
    last_seen_at: Time
    running: list[int] = Field(description="The ids of the jobs it runs")


ListOrder = Literal["asc", "desc"]

#: for the other request models of the edge (service.web.schedule_schemas)
translate_errors = _translate
