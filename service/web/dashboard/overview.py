"""The queues and workers pages: what GET /queues and GET /workers answer (API.md section 11),
read the same way (service.web.overview.queue_rows, service.workers), and the concurrency keys
in use now (API.md section 6: service.concurrency, as the metrics read them)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from service import concurrency, workers
from service.db import transaction
from service.web import overview as api_overview
from service.web.dashboard.render import page


def _keys(request: Request) -> dict[str, int]:
    with transaction(request.state.services.engine) as conn:
        return concurrency.in_use(conn)


async def queues_page(request: Request) -> Response:
    services = request.state.services
    rows = await run_in_threadpool(api_overview.queue_rows, services)
    keys = await run_in_threadpool(_keys, request)
    return page(request, "queues.html", queues=rows, keys=sorted(keys.items()))


def _workers(request: Request) -> list[workers.WorkerInfo]:
    services = request.state.services
    return workers.live(services.engine, services.settings.lease_timeout)


async def workers_page(request: Request) -> Response:
    return page(request, "workers.html", workers=await run_in_threadpool(_workers, request))
