"""Schedules at the HTTP edge (API.md section 7): request validation and the resource.

A schedule's `job` is validated exactly as `POST /jobs` validates a job (its errors come back
under `job.<field>`), and the command policy is asked before anything is stored: a schedule
is created whole or not at all. Problems are reported Rails-style, every one at once.
"""

from __future__ import annotations

import zoneinfo
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from service.config import Settings
from service.errors import ValidationFailed
from service.jobs import JobSpec
from service.schedules import (
    MAX_EVERY,
    NewSchedule,
    Schedule,
    Timing,
    check_cron,
    template_of,
    zone,
)
from service.web.schemas import (
    BLANK,
    NON_BLANK,
    NUL_FREE,
    Time,
    coerce_json_fields,
    format_time,
    parse_create,
    translate_errors,
)

TIMEZONE_PATTERN = "^[A-Za-z][A-Za-z0-9_+/-]{0,63}$"
EXACTLY_ONE = "give exactly one of cron and every"
NOT_IN_A_TEMPLATE = "cannot be given in a schedule's job: its jobs are due at each tick"


class ScheduleFields(BaseModel):
    """The fields a client may set (all optional here; create requires some)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: (
        Annotated[
            str,
            StringConstraints(min_length=1, max_length=100, pattern=NON_BLANK),
            Field(description="Unique"),
        ]
        | None
    ) = None
    cron: (
        Annotated[
            str,
            StringConstraints(min_length=1, max_length=255, pattern=NUL_FREE),
            Field(description="5 fields, as crontab (minute hour day-of-month month day-of-week)"),
        ]
        | None
    ) = None
    every: (
        Annotated[
            int, Field(ge=1, le=MAX_EVERY, description="Seconds between ticks (instead of cron)")
        ]
        | None
    ) = None
    timezone: (
        Annotated[
            str,
            StringConstraints(pattern=TIMEZONE_PATTERN),
            Field(description="IANA time zone of cron (default UTC)"),
        ]
        | None
    ) = None
    job: dict[str, Any] | None = Field(
        default=None, description="The fields of POST /jobs (no run_at)"
    )
    enabled: bool | None = None
    overlap: Literal["skip", "allow"] | None = Field(
        default=None,
        description="skip (default): no new job while the last one of this schedule is not final",
    )


def _fields(data: dict[str, Any]) -> tuple[ScheduleFields, dict[str, list[str]]]:
    every = data.get("every")
    if isinstance(every, float) and every.is_integer() and abs(every) < 2**63:
        data = dict(data, every=int(every))  # JSON has one number type: 5.0 is an integer
    try:
        return ScheduleFields.model_validate(data), {}
    except ValidationError as exc:
        errors = translate_errors(exc)
    # validate what is valid, to report every problem at once
    good = {key: value for key, value in data.items() if key not in errors}
    try:
        return ScheduleFields.model_validate(good), errors
    except ValidationError:
        return ScheduleFields(), errors


def _job(data: Any, settings: Settings, errors: dict[str, list[str]]) -> JobSpec | None:
    if not isinstance(data, dict):
        errors["job"] = ["must be an object of job fields"]
        return None
    if "run_at" in data:
        errors["job.run_at"] = [NOT_IN_A_TEMPLATE]
        data = {key: value for key, value in data.items() if key != "run_at"}
    try:
        return parse_create(coerce_json_fields(data), settings)
    except ValidationFailed as exc:
        for name, messages in exc.errors.items():
            errors[f"job.{name}"] = messages
        return None


def _timing(
    cron: str | None, every: int | None, timezone: str, errors: dict[str, list[str]]
) -> Timing | None:
    if cron is not None and every is not None:
        errors["every"] = [f"cannot be given together with cron: {EXACTLY_ONE}"]
    elif cron is None and every is None and "cron" not in errors and "every" not in errors:
        errors["cron"] = [EXACTLY_ONE]
    if cron is not None:
        try:
            check_cron(cron)
        except ValueError as exc:
            errors["cron"] = [str(exc)]
    try:
        zone(timezone)
    except ValueError as exc:
        errors["timezone"] = [str(exc)]
    if errors:
        return None
    return Timing(cron, every, timezone)


def parse_new(data: dict[str, Any], settings: Settings) -> tuple[NewSchedule, JobSpec]:
    """A valid new schedule and its job (for the policy's check), or ValidationFailed."""
    fields, errors = _fields(data)
    if fields.name is None and "name" not in errors:
        errors["name"] = [BLANK]
    spec = None
    if "job" not in data:
        errors["job"] = [BLANK]
    elif "job" not in errors:
        spec = _job(data["job"], settings, errors)
    timing = _timing(fields.cron, fields.every, fields.timezone or "UTC", errors)
    if errors or timing is None or spec is None or fields.name is None:
        raise ValidationFailed(errors)
    new = NewSchedule(
        name=fields.name,
        timing=timing,
        job=template_of(spec),
        enabled=fields.enabled if fields.enabled is not None else True,
        overlap=fields.overlap or "skip",
    )
    return new, spec


def parse_change(
    data: dict[str, Any], current: Schedule, settings: Settings
) -> tuple[dict[str, Any], JobSpec | None]:
    """The column values a PATCH changes (a `job` replaces the template whole), and the new
    job (for the policy's check), or ValidationFailed."""
    if not data:
        raise ValidationFailed({"schedule": ["give at least one field to change"]})
    fields, errors = _fields(data)
    given = {key: value for key, value in fields.model_dump(exclude_unset=True).items()}
    nulls = sorted(key for key, value in given.items() if value is None)
    for key in nulls:
        if key in ("name", "job", "enabled", "overlap", "timezone"):
            errors[key] = [BLANK]
    spec = None
    if "job" in data and "job" not in errors:
        spec = _job(data["job"], settings, errors)
    cron, every = given.get("cron"), given.get("every")
    if cron is None and every is None:  # neither given: keep the current one
        cron, every = current.cron, current.every
    timezone = given.get("timezone") or current.timezone
    _timing(cron, every, timezone, errors)
    if errors:
        raise ValidationFailed(errors)
    changes: dict[str, Any] = {
        key: value
        for key, value in given.items()
        if value is not None and key not in ("cron", "every", "job")
    }
    if given.get("cron") is not None:
        changes["cron"], changes["every"] = given["cron"], None
    elif given.get("every") is not None:
        changes["cron"], changes["every"] = None, given["every"]
    if spec is not None:
        changes["job"] = template_of(spec)
    return changes, spec


def shown_job(template: dict[str, Any]) -> dict[str, Any]:
    """A template as the resource shows it: never its env values (they may be secrets)."""
    shown = {key: value for key, value in template.items() if key != "env"}
    shown["env"] = sorted(template["env"]) if template.get("env") else None
    return shown


class ScheduleResource(BaseModel):
    """A schedule as every endpoint returns it (API.md section 7)."""

    model_config = ConfigDict(extra="forbid")

    id: int
    name: str
    cron: str | None
    every: int | None
    timezone: str
    job: dict[str, Any] = Field(description="Its job's fields; `env` shows the variable names only")
    enabled: bool
    overlap: Literal["skip", "allow"]
    next_run_at: Time | None
    last_run_at: Time | None
    last_job_id: int | None
    created_at: Time
    updated_at: Time


def schedule_to_json(schedule: Schedule) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "name": schedule.name,
        "cron": schedule.cron,
        "every": schedule.every,
        "timezone": schedule.timezone,
        "job": shown_job(schedule.job),
        "enabled": schedule.enabled,
        "overlap": schedule.overlap,
        "next_run_at": format_time(schedule.next_run_at),
        "last_run_at": format_time(schedule.last_run_at),
        "last_job_id": schedule.last_job_id,
        "created_at": format_time(schedule.created_at),
        "updated_at": format_time(schedule.updated_at),
    }


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def input_schema(*, edit: bool) -> dict[str, Any]:
    """The JSON Schema of a create (edit: a change) request, with the same rules as
    parse_new and parse_change: the OpenAPI document shows it, and the fuzzer holds the two
    together. `cron` has the format `cron`: 5 fields that cronsim reads (a regular expression
    cannot say which ranges and dates exist)."""
    fields = ScheduleFields.model_json_schema()["properties"]

    def bare(name: str) -> dict[str, Any]:
        (schema,) = [b for b in fields[name]["anyOf"] if b != {"type": "null"}]
        schema = dict(schema, description=fields[name].get("description", ""))
        if not schema["description"]:
            del schema["description"]
        return schema

    cron = dict(bare("cron"), format="cron")
    timezone = {
        "type": "string",
        "enum": sorted(zoneinfo.available_timezones()),
        "description": "IANA time zone of cron (default UTC)",
    }
    properties: dict[str, Any] = {
        "name": bare("name"),
        "cron": _nullable(cron),
        "every": _nullable(bare("every")),
        "job": {"$ref": "#/components/schemas/ScheduleJob"},
        "enabled": bare("enabled") if edit else _nullable(bare("enabled")),
        "overlap": bare("overlap") if edit else _nullable(bare("overlap")),
        "timezone": timezone if edit else _nullable(timezone),
    }
    null = {"type": "null"}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if edit:
        schema["minProperties"] = 1
        # not both cron and every
        schema["anyOf"] = [{"properties": {"cron": null}}, {"properties": {"every": null}}]
    else:
        schema["required"] = ["name", "job"]
        # exactly one of cron and every
        schema["oneOf"] = [
            {"required": ["cron"], "properties": {"cron": {"type": "string"}}},
            {"required": ["every"], "properties": {"every": {"type": "integer"}}},
        ]
    return schema
