"""The OpenAPI 3.1 document of the API (served at /openapi.json).

Request schemas come from the same pydantic model that validates requests, with the limits of
the running settings filled in, so the document describes what this server accepts.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from service.config import Settings
from service.schemas import ENV_NAME_PATTERN, MAX_ARGV_ITEMS, MAX_ENV_VARS, JobFields
from service.states import State

TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {"anyOf": [TIME, {"type": "null"}]}
NULLABLE_STRING = {"anyOf": [{"type": "string"}, {"type": "null"}]}
NULLABLE_INT = {"anyOf": [{"type": "integer"}, {"type": "null"}]}

JOB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "id",
        "command",
        "argv",
        "queue",
        "priority",
        "state",
        "attempts",
        "max_retries",
        "timeout",
        "exit_code",
        "last_error",
        "run_at",
        "locked_at",
        "locked_by",
        "started_at",
        "finished_at",
        "failed_at",
        "created_at",
        "updated_at",
    ],
    "properties": {
        "id": {"type": "integer"},
        "command": {"type": "string"},
        "argv": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
        "queue": {"type": "string"},
        "priority": {"type": "integer"},
        "state": {"type": "string", "enum": [state.value for state in State]},
        "attempts": {"type": "integer", "minimum": 0},
        "max_retries": {"type": "integer", "minimum": 0},
        "timeout": {"type": "integer", "minimum": 1},
        "exit_code": NULLABLE_INT,
        "last_error": NULLABLE_STRING,
        "run_at": TIME,
        "locked_at": NULLABLE_TIME,
        "locked_by": NULLABLE_STRING,
        "started_at": NULLABLE_TIME,
        "finished_at": NULLABLE_TIME,
        "failed_at": NULLABLE_TIME,
        "created_at": TIME,
        "updated_at": TIME,
        "cancel_requested": {"type": "boolean"},
        "output_bytes": {"type": "integer", "minimum": 0},
        "output_truncated": {"type": "boolean"},
    },
}

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
VALIDATION_SCHEMA = {
    "type": "object",
    "description": "Each invalid field, with its messages",
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json(_ref("Error"))}


JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}
ERRORS = {
    "400": _error("Malformed body"),
    "404": _error("No such job"),
    "413": _error("Body too large"),
    "415": _error("Unsupported content type"),
    "503": _error("Database or broker unavailable"),
}
INVALID = {"description": "Invalid fields", "content": _json(_ref("ValidationErrors"))}


def _input_schema(settings: Settings, *, edit: bool) -> dict[str, Any]:
    schema = JobFields.model_json_schema()
    props = schema["properties"]
    text = {"type": "string", "minLength": 1, "maxLength": settings.max_command_length}
    props["command"] = {"anyOf": [text, {"type": "null"}], **_described(props["command"])}
    props["argv"] = {
        "anyOf": [
            {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "maxItems": MAX_ARGV_ITEMS,
            },
            {"type": "null"},
        ],
        **_described(props["argv"]),
    }
    props["queue"] = {
        "anyOf": [
            {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"},
            {"type": "null"},
        ]
    }
    props["timeout"]["anyOf"][0]["maximum"] = settings.max_timeout
    props["max_retries"]["anyOf"][0]["maximum"] = settings.max_retries_limit
    props["run_at"] = {"anyOf": [TIME, {"type": "null"}], **_described(props["run_at"])}
    if edit:
        del props["env"]
    else:
        props["env"] = {
            "anyOf": [
                {
                    "type": "object",
                    "maxProperties": MAX_ENV_VARS,
                    "propertyNames": {"pattern": ENV_NAME_PATTERN.pattern},
                    "additionalProperties": {"type": "string"},
                },
                {"type": "null"},
            ],
            **_described(props["env"]),
        }
    schema.pop("title", None)
    schema["additionalProperties"] = False
    return schema


def _described(prop: dict[str, Any]) -> dict[str, Any]:
    return {"description": prop["description"]} if "description" in prop else {}


def _request_body(name: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        _ref(name),
                        {
                            "type": "object",
                            "required": ["job"],
                            "properties": {"job": _ref(name)},
                        },
                    ]
                }
            },
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "job[command]": {"type": "string"},
                        "job[queue]": {"type": "string"},
                        "job[priority]": {"type": "integer"},
                        "job[timeout]": {"type": "integer"},
                        "job[max_retries]": {"type": "integer"},
                        "job[run_at]": TIME,
                    },
                }
            },
        },
    }


@cache
def document(settings: Settings) -> dict[str, Any]:
    job = {"description": "The job", "content": _json(_ref("Job"))}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "HTTP Job Runner",
            "version": "1",
            "description": "Run a command asynchronously because an HTTP request asked for it.",
        },
        "paths": {
            "/jobs": {
                "get": {
                    "summary": "List jobs, by id",
                    "parameters": [
                        {
                            "name": "state",
                            "in": "query",
                            "schema": {"type": "string", "enum": [s.value for s in State]},
                        },
                        {"name": "queue", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                        {
                            "name": "after",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0},
                        },
                        {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"]}},
                    ],
                    "responses": {
                        "200": {
                            "description": "A page of jobs; a Link header points to the next",
                            "content": _json({"type": "array", "items": _ref("Job")}),
                        },
                        "422": INVALID,
                        "503": ERRORS["503"],
                    },
                },
                "post": {
                    "summary": "Create a job",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
                        }
                    ],
                    "requestBody": _request_body("JobInput"),
                    "responses": {
                        "201": job,
                        "200": {
                            "description": "The job created earlier with this Idempotency-Key",
                            "content": _json(_ref("Job")),
                        },
                        "422": INVALID,
                        **{k: v for k, v in ERRORS.items() if k != "404"},
                    },
                },
            },
            "/jobs/{job_id}": {
                "parameters": [JOB_ID],
                "get": {"summary": "One job", "responses": {"200": job, "404": ERRORS["404"]}},
                "put": _edit_operation(),
                "patch": _edit_operation(),
                "delete": {
                    "summary": "Cancel the job if it runs, then delete it and its output",
                    "responses": {"204": {"description": "Deleted"}, "404": ERRORS["404"]},
                },
            },
            "/jobs/{job_id}/cancel": {
                "parameters": [JOB_ID],
                "post": {
                    "summary": "Stop the job",
                    "responses": {
                        "202": job,
                        "404": ERRORS["404"],
                        "409": _error("The job is final already"),
                    },
                },
            },
            "/jobs/{job_id}/retry": {
                "parameters": [JOB_ID],
                "post": {
                    "summary": "Queue a failed or cancelled job again",
                    "responses": {
                        "202": job,
                        "404": ERRORS["404"],
                        "409": _error("The job is not failed nor cancelled"),
                    },
                },
            },
            "/jobs/{job_id}/output": {
                "parameters": [JOB_ID],
                "get": {
                    "summary": "The job's output (stdout and stderr, interleaved)",
                    "parameters": [
                        {
                            "name": "offset",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The kept output, from X-Output-Offset",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "404": ERRORS["404"],
                        "422": INVALID,
                    },
                },
            },
            "/healthz": {
                "get": {"summary": "Liveness", "responses": {"200": {"description": "Alive"}}}
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: the database and the broker answer",
                    "responses": {"200": {"description": "Ready"}, "503": ERRORS["503"]},
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "OK"}}}
            },
        },
        "components": {
            "schemas": {
                "Job": JOB_SCHEMA,
                "JobInput": _input_schema(settings, edit=False),
                "JobEdit": _input_schema(settings, edit=True),
                "Error": ERROR_SCHEMA,
                "ValidationErrors": VALIDATION_SCHEMA,
            }
        },
    }


def _edit_operation() -> dict[str, Any]:
    return {
        "summary": "Change a job that has not started yet",
        "requestBody": _request_body("JobEdit"),
        "responses": {
            "204": {"description": "Changed"},
            "409": _error("The job has started already"),
            "422": INVALID,
            **ERRORS,
        },
    }
