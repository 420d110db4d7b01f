"""The schedule endpoints (API.md section 7): parse, check, call `service.schedules`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service import schedules
from service.db import transaction
from service.errors import NotFound
from service.jobs import JobSpec
from service.queries import Job
from service.web.bodies import read_json_object
from service.web.schedule_schemas import parse_change, parse_new, schedule_to_json
from service.web.schemas import job_to_json

if TYPE_CHECKING:
    from service.web.routes import Services

MAX_ID = 2**63 - 1


def _services(request: Request) -> Services:
    services: Services = request.state.services
    return services


def _schedule_id(request: Request) -> int:
    schedule_id = int(request.path_params["schedule_id"])
    if schedule_id > MAX_ID:
        raise NotFound(f"no schedule {schedule_id}")
    return schedule_id


def _admit(services: Services, spec: JobSpec) -> None:
    """What POST /jobs asks of a job besides its fields: the command policy (403) and the
    queue rules (422), before anything is stored."""
    services.policy.check(spec.command, spec.argv, spec.env)
    services.queues.admit(spec.queue)


async def create_schedule(request: Request) -> Response:
    services = _services(request)
    data = await read_json_object(request, services.settings, "schedule")
    new, spec = parse_new(data, services.settings)

    def create() -> schedules.Schedule:
        _admit(services, spec)
        return schedules.create(services.engine, new)

    schedule = await run_in_threadpool(create)
    return JSONResponse(
        schedule_to_json(schedule),
        status_code=201,
        headers={"Location": f"/schedules/{schedule.id}"},
    )


def _all(services: Services) -> list[schedules.Schedule]:
    with transaction(services.engine) as conn:
        return schedules.list_all(conn)


async def list_schedules(request: Request) -> Response:
    found = await run_in_threadpool(_all, _services(request))
    return JSONResponse([schedule_to_json(schedule) for schedule in found])


def _one(services: Services, schedule_id: int) -> schedules.Schedule:
    with transaction(services.engine) as conn:
        return schedules.require(conn, schedule_id)


async def show_schedule(request: Request) -> Response:
    schedule = await run_in_threadpool(_one, _services(request), _schedule_id(request))
    return JSONResponse(schedule_to_json(schedule))


def _edit(services: Services, schedule_id: int, data: dict[str, Any]) -> schedules.Schedule:
    """A PATCH of these fields (the dashboard's enable and disable buttons send one too)."""
    current = _one(services, schedule_id)
    changes, spec = parse_change(data, current, services.settings)
    if spec is not None:
        _admit(services, spec)
    return schedules.update(services.engine, schedule_id, changes)


async def edit_schedule(request: Request) -> Response:
    services = _services(request)
    schedule_id = _schedule_id(request)
    data = await read_json_object(request, services.settings, "schedule")
    schedule = await run_in_threadpool(_edit, services, schedule_id, data)
    return JSONResponse(schedule_to_json(schedule))


async def delete_schedule(request: Request) -> Response:
    services = _services(request)
    await run_in_threadpool(schedules.delete, services.engine, _schedule_id(request))
    return Response(status_code=204)


def _trigger(services: Services, schedule_id: int) -> Job:
    job = schedules.trigger(services.engine, schedule_id)
    services.dispatcher.wake(job.queue)
    return job


async def trigger_schedule(request: Request) -> Response:
    job = await run_in_threadpool(_trigger, _services(request), _schedule_id(request))
    request.state.job_id = job.id
    return JSONResponse(job_to_json(job), status_code=201, headers={"Location": f"/jobs/{job.id}"})
