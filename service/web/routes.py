"""The HTTP endpoints: parse, call `service.jobs` / `service.queries`, answer. No SQL here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from dramatiq import Broker
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from service import jobs, queries
from service.config import QUEUE_NAME_PATTERN, Settings
from service.db import transaction
from service.dispatch import JOB_DELETED, Dispatcher, attempt_end
from service.errors import DatabaseUnavailable, NotFound, ValidationFailed
from service.metrics import RECORDER, JobRunnerCollector
from service.policy import CommandPolicy
from service.queries import Job, ListFilter
from service.queue_names import QueueNames
from service.scopes import Scope
from service.states import State
from service.web import deliveries, openapi, overview
from service.web import schedule_routes as sched
from service.web.access import PUBLIC, Endpoint, Need, ScopedRoute, declared_needs
from service.web.auth import TokenStore
from service.web.bodies import read_job_fields
from service.web.follow import OutputHub, follow
from service.web.schemas import job_to_json, parse_create, parse_edit
from service.web.submit import Submitter

MAX_ID = 2**63 - 1
MAX_LIST_LIMIT = 1000
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


@dataclass
class Services:
    """What the endpoints need, built once per web process by the app's lifespan."""

    settings: Settings
    engine: Engine
    broker: Broker
    dispatcher: Dispatcher
    #: None when authentication is off
    tokens: TokenStore | None
    policy: CommandPolicy
    hub: OutputHub
    submitter: Submitter
    queues: QueueNames


def _services(request: Request) -> Services:
    services: Services = request.state.services
    return services


def _job_id(request: Request) -> int:
    job_id = int(request.path_params["job_id"])
    if job_id > MAX_ID:
        raise NotFound(f"no job {job_id}")
    request.state.job_id = job_id
    return job_id


def _job_response(job: Job, status_code: int = 200, **headers: str) -> JSONResponse:
    return JSONResponse(job_to_json(job), status_code=status_code, headers=headers or None)


# --- jobs ---------------------------------------------------------------------------------


async def create_job(request: Request) -> Response:
    services = _services(request)
    key = request.headers.get("idempotency-key")
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ValidationFailed({"Idempotency-Key": ["must be 1 to 255 visible ASCII characters"]})
    fields = await read_job_fields(request, services.settings)
    spec = parse_create(fields, services.settings)
    services.policy.check(spec.command, spec.argv, spec.env)  # 403 before anything is stored
    await run_in_threadpool(services.queues.admit, spec.queue)
    job, created = await services.submitter.submit(spec, key)
    request.state.job_id = job.id
    request.state.job_state = job.state if created else "existing"
    return _job_response(job, 201 if created else 200, Location=f"/jobs/{job.id}")


def _list_filter(request: Request) -> ListFilter:
    params = request.query_params
    errors: dict[str, list[str]] = {}
    state = params.get("state")
    if state is not None and state not in State.__members__.values():
        errors["state"] = ["must be one of " + ", ".join(s.value for s in State)]
    queue = params.get("queue")
    if queue is not None and not QUEUE_NAME_PATTERN.fullmatch(queue):
        errors["queue"] = ["is not a valid queue name"]
    key = params.get("concurrency_key")
    if key is not None and not QUEUE_NAME_PATTERN.fullmatch(key):
        errors["concurrency_key"] = ["is not a valid concurrency key"]
    schedule_id = _int_param(params.get("schedule_id"), "schedule_id", 1, MAX_ID, errors)
    limit = _int_param(params.get("limit"), "limit", 1, MAX_LIST_LIMIT, errors)
    after = _int_param(params.get("after"), "after", 0, MAX_ID, errors)
    order = params.get("order", "asc")
    if order not in ("asc", "desc"):
        errors["order"] = ["must be asc or desc"]
    if errors:
        raise ValidationFailed(errors)
    return ListFilter(
        state=state,
        queue=queue,
        concurrency_key=key,
        schedule_id=schedule_id,
        after=after,
        limit=limit if limit is not None else 100,
        descending=order == "desc",
    )


def _int_param(
    raw: str | None, name: str, low: int, high: int, errors: dict[str, list[str]]
) -> int | None:
    if raw is None:
        return None
    if not re.fullmatch(r"\d{1,19}", raw) or not low <= int(raw) <= high:
        errors[name] = [f"must be an integer from {low} to {high}"]
        return None
    return int(raw)


def _list(engine: Engine, where: ListFilter) -> tuple[list[Job], bool]:
    with transaction(engine) as conn:
        return queries.list_jobs(conn, where)


async def list_jobs(request: Request) -> Response:
    where = _list_filter(request)
    page, more = await run_in_threadpool(_list, _services(request).engine, where)
    headers = {}
    if more and page:
        query = dict(request.query_params)
        query.update(after=str(page[-1].id), limit=str(where.limit))
        headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
    return JSONResponse([job_to_json(job) for job in page], headers=headers)


def _get(engine: Engine, job_id: int) -> Job:
    with transaction(engine) as conn:
        job = queries.get(conn, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


async def show_job(request: Request) -> Response:
    job = await run_in_threadpool(_get, _services(request).engine, _job_id(request))
    return _job_response(job)


def _edit(services: Services, job_id: int, fields: dict[str, Any]) -> None:
    changes = parse_edit(fields, services.settings)
    if "command" in changes:
        services.policy.check(changes["command"], changes["argv"])
    if "queue" in changes:
        services.queues.admit(changes["queue"])
    if not changes:  # only nulls: nothing to change
        _get(services.engine, job_id)  # still 404 for an unknown job
        return
    job = jobs.edit(services.engine, job_id, changes)
    if job.state == State.QUEUED:
        services.dispatcher.wake(job.queue)


async def edit_job(request: Request) -> Response:
    services = _services(request)
    job_id = _job_id(request)
    fields = await read_job_fields(request, services.settings)
    await run_in_threadpool(_edit, services, job_id, fields)
    return Response(status_code=204)


def _delete(services: Services, job_id: int) -> None:
    if jobs.delete(services.engine, job_id) == State.RUNNING:
        services.dispatcher.announce_cancel(job_id)
    # its followers, in any web process, end their streams (`deleted`) now
    services.dispatcher.publish_output(job_id, attempt_end(JOB_DELETED))


async def delete_job(request: Request) -> Response:
    await run_in_threadpool(_delete, _services(request), _job_id(request))
    request.state.job_state = "deleted"
    return Response(status_code=204)


def _cancel(services: Services, job_id: int) -> Job:
    settings = services.settings
    job = jobs.cancel(
        services.engine, job_id, settings.retention_policy, settings.callback_url or None
    )
    if job.state == State.RUNNING:
        services.dispatcher.announce_cancel(job_id)
    else:
        RECORDER.count("jobrunner_jobs_finished", job.queue, job.state)
    return job


async def cancel_job(request: Request) -> Response:
    job = await run_in_threadpool(_cancel, _services(request), _job_id(request))
    request.state.job_state = "cancel requested" if job.state == State.RUNNING else job.state
    return _job_response(job, 202)


def _retry(services: Services, job_id: int) -> Job:
    job = jobs.retry(services.engine, job_id)
    services.dispatcher.wake(job.queue)
    return job


async def retry_job(request: Request) -> Response:
    job = await run_in_threadpool(_retry, _services(request), _job_id(request))
    request.state.job_state = job.state
    return _job_response(job, 202)


def _output(engine: Engine, job_id: int) -> queries.StoredOutput | None:
    with transaction(engine) as conn:
        return queries.output(conn, job_id)


async def job_output(request: Request) -> Response:
    """The output as text; `?follow=1` streams it until the job is final (SSE when asked)."""
    services = _services(request)
    job_id = _job_id(request)
    errors: dict[str, list[str]] = {}
    offset = _int_param(request.query_params.get("offset"), "offset", 0, MAX_ID, errors)
    follow_flag = request.query_params.get("follow", "0")
    if follow_flag not in ("0", "1", "true", "false"):
        errors["follow"] = ["must be 1 or 0"]
    sse = "text/event-stream" in request.headers.get("accept", "")
    resume = request.headers.get("last-event-id")
    if sse and resume is not None:
        offset = _int_param(resume, "Last-Event-ID", 0, MAX_ID, errors)
    if errors:
        raise ValidationFailed(errors)
    stored = await run_in_threadpool(_output, services.engine, job_id)
    if stored is None:
        raise NotFound(f"no job {job_id}")
    start = max(offset or 0, stored.offset)
    headers = {
        "X-Output-Offset": str(start),
        "X-Output-Bytes": str(stored.total),
        "X-Output-Truncated": "true" if stored.offset > 0 else "false",
        "X-Job-State": stored.state,
    }
    if follow_flag in ("1", "true"):
        streaming = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        media_type = "text/event-stream" if sse else "text/plain; charset=utf-8"
        if request.method == "HEAD":  # the headers of the stream, and no stream to wait for
            return Response(media_type=media_type, headers=headers | streaming)

        async def load() -> queries.StoredOutput | None:
            return await run_in_threadpool(_output, services.engine, job_id)

        stream = follow(services.hub, job_id, offset or 0, sse, load)
        return StreamingResponse(stream, media_type=media_type, headers=headers | streaming)
    return Response(
        stored.data[start - stored.offset :],
        media_type="text/plain; charset=utf-8",
        headers=headers,
    )


# --- service ------------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _check_database(engine: Engine) -> bool:
    try:
        with transaction(engine) as conn:
            conn.execute(sa.text("SELECT 1"))
    except DatabaseUnavailable:
        return False
    return True


def _check_broker(dispatcher: Dispatcher) -> bool:
    return dispatcher.bus.ping()


async def readyz(request: Request) -> Response:
    services = _services(request)
    database = await run_in_threadpool(_check_database, services.engine)
    broker = await run_in_threadpool(_check_broker, services.dispatcher)
    checks = {
        "database": "ok" if database else "unavailable",
        "broker": "ok" if broker else "unavailable",
    }
    if database and broker:
        return JSONResponse({"status": "ok", **checks})
    down = " and ".join(name for name, value in checks.items() if value != "ok")
    return JSONResponse({"error": f"{down} unavailable", **checks}, status_code=503)


def _metrics(services: Services) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobRunnerCollector(services.engine, services.settings.lease_timeout))
    return generate_latest(registry)


async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(_metrics, _services(request))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def openapi_document(request: Request) -> Response:
    return JSONResponse(openapi.document(_services(request).settings, declared_needs(routes)))


def _job_routes(path: str, **methods: tuple[Need, Endpoint]) -> list[ScopedRoute]:
    """The route and its `.json` twin, as the original's Rails routes had."""
    return [ScopedRoute(p, **methods) for p in (path, f"{path}.json")]


READ, SUBMIT, ADMIN = Scope.READ, Scope.SUBMIT, Scope.ADMIN
#: every route, and the token scope each of its methods needs (service.web.access): API.md
#: section 9 (read: GET; submit: create, cancel, retry; admin: everything)
routes = [
    *_job_routes("/jobs", GET=(READ, list_jobs), POST=(SUBMIT, create_job)),
    *_job_routes(
        "/jobs/{job_id:int}",
        GET=(READ, show_job),
        PUT=(ADMIN, edit_job),
        PATCH=(ADMIN, edit_job),
        DELETE=(ADMIN, delete_job),
    ),
    ScopedRoute("/jobs/{job_id:int}/cancel", POST=(SUBMIT, cancel_job)),
    ScopedRoute("/jobs/{job_id:int}/retry", POST=(SUBMIT, retry_job)),
    ScopedRoute("/jobs/{job_id:int}/output", GET=(READ, job_output)),
    ScopedRoute(
        "/schedules", GET=(READ, sched.list_schedules), POST=(ADMIN, sched.create_schedule)
    ),
    ScopedRoute(
        "/schedules/{schedule_id:int}",
        GET=(READ, sched.show_schedule),
        PATCH=(ADMIN, sched.edit_schedule),
        DELETE=(ADMIN, sched.delete_schedule),
    ),
    ScopedRoute("/schedules/{schedule_id:int}/trigger", POST=(ADMIN, sched.trigger_schedule)),
    ScopedRoute("/jobs/{job_id:int}/deliveries", GET=(READ, deliveries.job_deliveries)),
    ScopedRoute("/queues", GET=(READ, overview.list_queues)),
    ScopedRoute("/workers", GET=(READ, overview.list_workers)),
    ScopedRoute("/healthz", GET=(PUBLIC, healthz)),
    ScopedRoute("/readyz", GET=(PUBLIC, readyz)),
    ScopedRoute("/metrics", GET=(READ, metrics)),
    ScopedRoute("/openapi.json", GET=(READ, openapi_document)),
]
