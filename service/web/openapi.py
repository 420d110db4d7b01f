"""The OpenAPI 3.1 document of the API (served at /openapi.json).

Its schemas are generated from the models that validate requests and shape responses
(service.web.schemas: the job fields with the running settings' limits filled in, and the job
resource); only the structure around them is written here: which of command and argv a body
must hold, the form fields, the operations and their answers. The token scope each operation
needs comes from the routes themselves (service.web.access): its security requirement names
it, and its 403 says so; an operation documented here that no route declares is an error.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from service.config import Settings
from service.scopes import Scope
from service.states import State
from service.web.access import Need
from service.web.schedule_schemas import ScheduleResource, input_schema
from service.web.schemas import (
    DeliveryResource,
    JobResource,
    Limits,
    QueueResource,
    WorkerResource,
    fields_model,
)

REF = "#/components/schemas/{model}"

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


def _resource_schemas() -> dict[str, Any]:
    """The resources the API returns, and the schemas they refer to (a job's state)."""
    schemas: dict[str, Any] = {}
    models = (
        ("Job", JobResource),
        ("Queue", QueueResource),
        ("Worker", WorkerResource),
        ("Schedule", ScheduleResource),
        ("Delivery", DeliveryResource),
    )
    for name, model in models:
        schema = model.model_json_schema(ref_template=REF, mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    return schemas


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
UNAUTHORIZED = {
    "description": "Missing or wrong token",
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    "content": _json(_ref("Error")),
}
MAX_ID = 2**63 - 1


def _nullable(schema: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    wrapped: dict[str, Any] = {"anyOf": [schema, {"type": "null"}]}
    if description:
        wrapped["description"] = description
    return wrapped


def _field_schemas(settings: Settings) -> dict[str, dict[str, Any]]:
    """One schema per job field, as `fields_model` validates it (without its `null`, which
    means: not given)."""
    model = fields_model(Limits.from_settings(settings))
    fields: dict[str, dict[str, Any]] = {}
    for name, prop in model.model_json_schema()["properties"].items():
        (schema,) = [branch for branch in prop["anyOf"] if branch != {"type": "null"}]
        fields[name] = schema
    return fields


def _input_schema(settings: Settings, *, edit: bool) -> dict[str, Any]:
    fields = _field_schemas(settings)
    if edit:
        del fields["env"]
    if edit or not settings.callbacks_enabled:  # set once, on create; refused when off
        del fields["callback_url"]
    properties = {name: _nullable(schema) for name, schema in fields.items()}
    null = {"type": "null"}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        # JOBRUNNER_UNKNOWN_FIELDS=ignore: other fields are dropped, as the original did
        "additionalProperties": settings.unknown_fields == "ignore",
    }
    if edit:
        # an explicit null command is a blank command; command and argv not both
        properties["command"] = fields["command"]
        schema["minProperties"] = 1
        schema["anyOf"] = [{"properties": {"argv": null}}, {"properties": {"command": False}}]
    else:
        # exactly one of command and argv
        schema["anyOf"] = [
            {"required": ["command"], "properties": {"command": {"type": "string"}, "argv": null}},
            {"required": ["argv"], "properties": {"argv": {"type": "array"}, "command": null}},
        ]
    # a concurrency_limit only with a concurrency_key (API.md section 6)
    schema["allOf"] = [
        {
            "anyOf": [
                {"properties": {"concurrency_limit": null}},
                {
                    "required": ["concurrency_key"],
                    "properties": {"concurrency_key": {"type": "string"}},
                },
            ]
        }
    ]
    return schema


def _schedule_job_schema(settings: Settings) -> dict[str, Any]:
    """A schedule's job: the fields of POST /jobs but run_at (its jobs are due at each tick)."""
    schema = _input_schema(settings, edit=False)
    del schema["properties"]["run_at"]
    schema["properties"]["run_at"] = False
    return schema


def _form_schema(settings: Settings, *, edit: bool) -> dict[str, Any]:
    """The original's form fields (`job[command]=...`); argv and env go as JSON."""
    fields = _field_schemas(settings)
    names = (
        "command",
        "queue",
        "priority",
        "timeout",
        "max_retries",
        "run_at",
        "concurrency_key",
        "concurrency_limit",
    )
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {f"job[{name}]": fields[name] for name in names},
        # fields outside job[...] are ignored, as Rails did; an unknown job[...] field is not
        "patternProperties": {"^(?!job\\[)": {}},
        "additionalProperties": settings.unknown_fields == "ignore",
    }
    if edit:
        schema["anyOf"] = [{"required": [f"job[{name}]"]} for name in names]
    else:
        schema["required"] = ["job[command]"]
    # a concurrency_limit only with a concurrency_key (API.md section 6)
    schema["allOf"] = [
        {
            "anyOf": [
                # absent (`false` refuses any value); the same as `not: {required: [...]}`,
                # which costs a schema-driven fuzzer far more to generate around
                {"properties": {"job[concurrency_limit]": False}},
                {"required": ["job[concurrency_key]"]},
            ]
        }
    ]
    return schema


def _request_body(name: str, settings: Settings) -> dict[str, Any]:
    edit = name == "JobEdit"
    return {
        "description": (
            'The fields as a JSON object; the original\'s wrapped form `{"job": {...}}` is '
            "accepted too, or form fields `job[field]=value`"
        ),
        "required": True,
        "content": {
            "application/json": {"schema": _ref(name)},
            "application/x-www-form-urlencoded": {"schema": _form_schema(settings, edit=edit)},
        },
    }


def _operation(
    operation_id: str, summary: str, responses: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """An operation that needs a token: 401 is one of its answers."""
    return {
        "operationId": operation_id,
        "summary": summary,
        "responses": {**responses, "401": UNAUTHORIZED},
        **extra,
    }


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    parameter = {"name": name, "in": "query", "schema": schema}
    if description:
        parameter["description"] = description
    return parameter


JOB_LINKS = {
    name: {"operationId": operation, "parameters": {"job_id": "$response.body#/id"}}
    for name, operation in (
        ("GetJob", "showJob"),
        ("GetOutput", "jobOutput"),
        ("CancelJob", "cancelJob"),
        ("RetryJob", "retryJob"),
        ("EditJob", "editJob"),
        ("DeleteJob", "deleteJob"),
    )
}


def _with_scopes(paths: dict[str, Any], needs: tuple[tuple[str, str, Need], ...]) -> None:
    """Each operation's security requirement and 403, from the scope its route declares."""
    declared = {(path, method): need for path, method, need in needs}
    for path, item in paths.items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            if (path, method) not in declared:
                raise ValueError(f"{method.upper()} {path} is documented, but no route declares it")
            need = declared[(path, method)]
            if not isinstance(need, Scope):  # public: no token at all
                operation["security"] = []
                continue
            operation["security"] = [{"bearer": [need.value]}]
            outside = f"outside the token's scope (it needs {need.value} or admin)"
            if need == Scope.ADMIN:
                outside = "outside the token's scope (it needs admin)"
            policy = operation["responses"].get("403")
            description = (
                f"{policy['description']}, or {outside}" if policy else outside.capitalize()
            )
            operation["responses"]["403"] = _error(description)
            note = f"Needs a token of scope `{need.value}`."
            operation["description"] = " ".join(filter(None, [operation.get("description"), note]))


@cache
def document(settings: Settings, needs: tuple[tuple[str, str, Need], ...]) -> dict[str, Any]:
    """The document for these settings; `needs`: what each route declares it needs
    (service.web.access.declared_needs)."""
    job = {"description": "The job", "content": _json(_ref("Job"))}
    created = {
        "description": "Created",
        "headers": {"Location": {"schema": {"type": "string"}, "description": "/jobs/{id}"}},
        "content": _json(_ref("Job")),
        "links": JOB_LINKS,
    }
    edit = _edit_operation(settings)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "HTTP Job Runner",
            "version": "1",
            "description": "Run a command asynchronously because an HTTP request asked for it.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/jobs": {
                "get": _operation(
                    "listJobs",
                    "List jobs, by id",
                    {
                        "200": {
                            "description": "A page of jobs; a Link header points to the next",
                            "headers": {"Link": {"schema": {"type": "string"}}},
                            "content": _json({"type": "array", "items": _ref("Job")}),
                        },
                        "422": INVALID,
                        "503": ERRORS["503"],
                    },
                    parameters=[
                        _query("state", {"type": "string", "enum": [s.value for s in State]}),
                        _query("queue", _field_schemas(settings)["queue"]),
                        _query(
                            "concurrency_key",
                            _field_schemas(settings)["concurrency_key"],
                            "Only the jobs of this concurrency key",
                        ),
                        _query(
                            "schedule_id",
                            {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                            "Only the jobs this schedule created",
                        ),
                        _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                        _query(
                            "after",
                            {"type": "integer", "minimum": 0, "maximum": MAX_ID},
                            "Only jobs with a larger id (smaller with order=desc)",
                        ),
                        _query("order", {"type": "string", "enum": ["asc", "desc"]}),
                    ],
                ),
                "post": _operation(
                    "createJob",
                    "Create a job",
                    {
                        "201": created,
                        "200": {
                            "description": "The job created earlier with this Idempotency-Key",
                            "content": _json(_ref("Job")),
                        },
                        "403": _error("Not allowed by the command policy"),
                        "422": INVALID,
                        **{k: v for k, v in ERRORS.items() if k != "404"},
                    },
                    parameters=[
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
                        }
                    ],
                    requestBody=_request_body("JobInput", settings),
                ),
            },
            "/jobs/{job_id}": {
                "parameters": [JOB_ID],
                "get": _operation(
                    "showJob", "One job", {"200": job, "404": ERRORS["404"], "503": ERRORS["503"]}
                ),
                "put": edit,
                "patch": {**edit, "operationId": "patchJob"},
                "delete": _operation(
                    "deleteJob",
                    "Cancel the job if it runs, then delete it and its output",
                    {
                        "204": {"description": "Deleted"},
                        "404": ERRORS["404"],
                        "503": ERRORS["503"],
                    },
                ),
            },
            "/jobs/{job_id}/cancel": {
                "parameters": [JOB_ID],
                "post": _operation(
                    "cancelJob",
                    "Stop the job",
                    {
                        "202": job,
                        "404": ERRORS["404"],
                        "409": _error("The job is final already"),
                        "503": ERRORS["503"],
                    },
                ),
            },
            "/jobs/{job_id}/retry": {
                "parameters": [JOB_ID],
                "post": _operation(
                    "retryJob",
                    "Queue a failed or cancelled job again",
                    {
                        "202": job,
                        "404": ERRORS["404"],
                        "409": _error("The job is not failed nor cancelled"),
                        "503": ERRORS["503"],
                    },
                ),
            },
            "/jobs/{job_id}/output": {
                "parameters": [JOB_ID],
                "get": _operation(
                    "jobOutput",
                    "The job's output (stdout and stderr, interleaved)",
                    {
                        "200": {
                            "description": "The kept output, from byte X-Output-Offset",
                            "headers": {
                                name: {"schema": {"type": "string"}}
                                for name in (
                                    "X-Output-Offset",
                                    "X-Output-Bytes",
                                    "X-Output-Truncated",
                                    "X-Job-State",
                                )
                            },
                            "content": {
                                "text/plain": {"schema": {"type": "string"}},
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        },
                        "404": ERRORS["404"],
                        "422": INVALID,
                        "503": ERRORS["503"],
                    },
                    parameters=[
                        _query(
                            "offset",
                            {"type": "integer", "minimum": 0, "maximum": MAX_ID},
                            "Skip the bytes before this offset",
                        ),
                        _query(
                            "follow",
                            {"type": "string", "enum": ["0", "1", "true", "false"]},
                            "1: stream the output until the job is final (Server-Sent Events "
                            "with Accept: text/event-stream)",
                        ),
                    ],
                ),
            },
            "/jobs/{job_id}/deliveries": {
                "parameters": [JOB_ID],
                "get": _operation(
                    "jobDeliveries",
                    "Each delivery attempt of the job's callback events, oldest first",
                    {
                        "200": {
                            "description": "The attempts (an empty array when there are none)",
                            "content": _json({"type": "array", "items": _ref("Delivery")}),
                        },
                        "404": ERRORS["404"],
                        "503": ERRORS["503"],
                    },
                ),
            },
            **_schedule_paths(),
            "/queues": {
                "get": _operation(
                    "listQueues",
                    "Every queue with jobs that are not final: waiting, running, oldest waiting",
                    {
                        "200": {
                            "description": "The queues, by name",
                            "content": _json({"type": "array", "items": _ref("Queue")}),
                        },
                        "503": ERRORS["503"],
                    },
                )
            },
            "/workers": {
                "get": _operation(
                    "listWorkers",
                    "The live worker processes and the jobs each runs",
                    {
                        "200": {
                            "description": "The workers, by name",
                            "content": _json({"type": "array", "items": _ref("Worker")}),
                        },
                        "503": ERRORS["503"],
                    },
                )
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness",
                    "security": [],
                    "responses": {"200": {"description": "Alive"}},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Readiness: the database and the broker answer",
                    "security": [],
                    "responses": {"200": {"description": "Ready"}, "503": ERRORS["503"]},
                }
            },
            "/metrics": {
                "get": _operation(
                    "metrics",
                    "Prometheus metrics (text format)",
                    {
                        "200": {
                            "description": "Jobs, queues and HTTP requests of every process",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "503": ERRORS["503"],
                    },
                )
            },
            "/openapi.json": {
                "get": _operation("openapi", "This document", {"200": {"description": "OK"}})
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token; its scope (read, submit or admin) is what "
                    "each operation's security requirement names",
                }
            },
            "schemas": {
                **_resource_schemas(),
                "JobInput": _input_schema(settings, edit=False),
                "JobEdit": _input_schema(settings, edit=True),
                "ScheduleJob": _schedule_job_schema(settings),
                "ScheduleInput": input_schema(edit=False),
                "ScheduleEdit": input_schema(edit=True),
                "Error": ERROR_SCHEMA,
                "ValidationErrors": VALIDATION_SCHEMA,
            },
        },
    }
    _with_scopes(doc["paths"], needs)
    return doc


def _edit_operation(settings: Settings) -> dict[str, Any]:
    return _operation(
        "editJob",
        "Change a job that has not started yet",
        {
            "204": {"description": "Changed"},
            "403": _error("Not allowed by the command policy"),
            "409": _error("The job has started already"),
            "422": INVALID,
            **ERRORS,
        },
        requestBody=_request_body("JobEdit", settings),
    )


SCHEDULE_ID = {
    "name": "schedule_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}


def _schedule_paths() -> dict[str, Any]:
    """API.md section 7."""
    one = {"description": "The schedule", "content": _json(_ref("Schedule"))}
    missing = _error("No such schedule")
    body = {
        "required": True,
        "content": {"application/json": {"schema": _ref("ScheduleInput")}},
    }
    links = {
        name: {"operationId": operation, "parameters": {"schedule_id": "$response.body#/id"}}
        for name, operation in (
            ("GetSchedule", "showSchedule"),
            ("EditSchedule", "editSchedule"),
            ("TriggerSchedule", "triggerSchedule"),
            ("DeleteSchedule", "deleteSchedule"),
        )
    }
    change = {"required": True, "content": {"application/json": {"schema": _ref("ScheduleEdit")}}}
    errors = {k: v for k, v in ERRORS.items() if k != "404"}
    return {
        "/schedules": {
            "get": _operation(
                "listSchedules",
                "Every schedule, by name",
                {
                    "200": {
                        "description": "The schedules",
                        "content": _json({"type": "array", "items": _ref("Schedule")}),
                    },
                    "503": ERRORS["503"],
                },
            ),
            "post": _operation(
                "createSchedule",
                "Create a schedule: a job from its template at each tick",
                {
                    "201": {
                        "description": "Created",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                        "content": _json(_ref("Schedule")),
                        "links": links,
                    },
                    "403": _error("Its job is not allowed by the command policy"),
                    "409": _error("A schedule of that name exists"),
                    "422": INVALID,
                    **errors,
                },
                requestBody=body,
            ),
        },
        "/schedules/{schedule_id}": {
            "parameters": [SCHEDULE_ID],
            "get": _operation(
                "showSchedule", "One schedule", {"200": one, "404": missing, "503": ERRORS["503"]}
            ),
            "patch": _operation(
                "editSchedule",
                "Change a schedule (a job replaces the template whole)",
                {
                    "200": one,
                    "403": _error("Its job is not allowed by the command policy"),
                    "404": missing,
                    "409": _error("A schedule of that name exists"),
                    "422": INVALID,
                    **errors,
                },
                requestBody=change,
            ),
            "delete": _operation(
                "deleteSchedule",
                "Delete a schedule (its jobs stay)",
                {"204": {"description": "Deleted"}, "404": missing, "503": ERRORS["503"]},
            ),
        },
        "/schedules/{schedule_id}/trigger": {
            "parameters": [SCHEDULE_ID],
            "post": _operation(
                "triggerSchedule",
                "Create the schedule's job now, enabled or not, whatever its overlap",
                {
                    "201": {
                        "description": "The job created",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                        "content": _json(_ref("Job")),
                    },
                    "404": missing,
                    "503": ERRORS["503"],
                },
            ),
        },
    }
