"""The schedules pages (API.md section 7): the list (`/ui/schedules`), a schedule's page
(`/ui/schedules/{id}`: its fields, its job template, its recent jobs) and its buttons: enable,
disable, trigger. Reads and changes go through what the API's routes use
(service.web.schedule_routes: service.schedules, and for the jobs service.queries); the buttons
need the scope the API asks for schedule changes (admin), and are shown to admin sessions only.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service import queries, schedules
from service.db import transaction
from service.queries import Job, ListFilter
from service.scopes import Scope
from service.web import schedule_routes as api
from service.web.access import granted
from service.web.dashboard import csrf
from service.web.dashboard.render import page
from service.web.schedule_schemas import shown_job

#: the jobs a schedule's page shows (the jobs list, filtered by schedule_id, has them all)
RECENT_JOBS = 20


def _may_change(request: Request) -> bool:
    scope = granted(request.scope)
    return scope is not None and scope.allows(Scope.ADMIN)


async def schedules_page(request: Request) -> Response:
    found = await run_in_threadpool(api._all, request.state.services)
    return page(request, "schedules.html", schedules=found)


def _with_jobs(request: Request, schedule_id: int) -> tuple[schedules.Schedule, list[Job], bool]:
    services = request.state.services
    schedule = api._one(services, schedule_id)
    where = ListFilter(schedule_id=schedule_id, limit=RECENT_JOBS, descending=True)
    with transaction(services.engine) as conn:
        recent, more = queries.list_jobs(conn, where)
    return schedule, recent, more


async def schedule_page(request: Request) -> Response:
    schedule_id = api._schedule_id(request)
    schedule, recent, more = await run_in_threadpool(_with_jobs, request, schedule_id)
    template: dict[str, Any] = shown_job(schedule.job)
    return page(
        request,
        "schedule.html",
        schedule=schedule,
        template=template,
        recent=recent,
        more=more,
        may_change=_may_change(request),
    )


def _to_schedule(schedule_id: int) -> Response:
    return RedirectResponse(f"/ui/schedules/{schedule_id}", status_code=303)


async def _set_enabled(request: Request, enabled: bool) -> Response:
    csrf.check(request, await csrf.read_form(request))
    schedule_id = api._schedule_id(request)
    services = request.state.services
    await run_in_threadpool(api._edit, services, schedule_id, {"enabled": enabled})
    return _to_schedule(schedule_id)


async def enable(request: Request) -> Response:
    return await _set_enabled(request, True)


async def disable(request: Request) -> Response:
    return await _set_enabled(request, False)


async def trigger(request: Request) -> Response:
    """Its job now (as POST /schedules/{id}/trigger), then back to its page, the job on top."""
    csrf.check(request, await csrf.read_form(request))
    schedule_id = api._schedule_id(request)
    job = await run_in_threadpool(api._trigger, request.state.services, schedule_id)
    request.state.job_id = job.id
    return _to_schedule(schedule_id)
