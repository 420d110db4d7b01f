"""The dashboard's routes, each declaring the token scope its methods need (API.md section 9:
a session has the scope of the token it signed in with), as every route of the app does."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service.scopes import Scope
from service.web.access import PUBLIC, ScopedRoute
from service.web.dashboard import (
    account,
    actions,
    assets,
    job_page,
    jobs_list,
    overview,
    schedule_pages,
)
from service.web.dashboard.session import PREFIX


async def home(request: Request) -> Response:
    return RedirectResponse(f"{PREFIX}/jobs", status_code=303)


READ, SUBMIT, ADMIN = Scope.READ, Scope.SUBMIT, Scope.ADMIN
routes = [
    ScopedRoute(PREFIX, GET=(READ, home)),
    ScopedRoute(
        f"{PREFIX}/login", GET=(PUBLIC, account.sign_in_page), POST=(PUBLIC, account.sign_in_page)
    ),
    ScopedRoute(f"{PREFIX}/logout", POST=(PUBLIC, account.sign_out)),
    ScopedRoute(f"{PREFIX}/jobs", GET=(READ, jobs_list.jobs_page), POST=(SUBMIT, actions.submit)),
    ScopedRoute(f"{PREFIX}/jobs/new", GET=(SUBMIT, actions.new_job_page)),
    ScopedRoute(f"{PREFIX}/jobs/{{job_id:int}}", GET=(READ, job_page.job_page)),
    ScopedRoute(f"{PREFIX}/jobs/{{job_id:int}}/output", GET=(READ, job_page.job_output)),
    ScopedRoute(f"{PREFIX}/jobs/{{job_id:int}}/cancel", POST=(SUBMIT, actions.cancel)),
    ScopedRoute(f"{PREFIX}/jobs/{{job_id:int}}/retry", POST=(SUBMIT, actions.retry)),
    ScopedRoute(f"{PREFIX}/jobs/{{job_id:int}}/delete", POST=(ADMIN, actions.delete)),
    ScopedRoute(f"{PREFIX}/queues", GET=(READ, overview.queues_page)),
    ScopedRoute(f"{PREFIX}/workers", GET=(READ, overview.workers_page)),
    ScopedRoute(f"{PREFIX}/schedules", GET=(READ, schedule_pages.schedules_page)),
    ScopedRoute(
        f"{PREFIX}/schedules/{{schedule_id:int}}", GET=(READ, schedule_pages.schedule_page)
    ),
    ScopedRoute(
        f"{PREFIX}/schedules/{{schedule_id:int}}/enable", POST=(ADMIN, schedule_pages.enable)
    ),
    ScopedRoute(
        f"{PREFIX}/schedules/{{schedule_id:int}}/disable", POST=(ADMIN, schedule_pages.disable)
    ),
    ScopedRoute(
        f"{PREFIX}/schedules/{{schedule_id:int}}/trigger", POST=(ADMIN, schedule_pages.trigger)
    ),
    *(ScopedRoute(assets.PATH + name, GET=(PUBLIC, assets.serve)) for name in assets.ASSETS),
]
