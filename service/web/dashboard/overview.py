"""The queues and workers pages: what GET /queues and GET /workers answer (API.md section 11),
read the same way (service.queries, service.workers)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from service import queries, workers
from service.db import transaction, utcnow
from service.web.dashboard.render import page


def _queues(request: Request) -> list[queries.QueueStats]:
    with transaction(request.state.services.engine) as conn:
        return queries.queue_stats(conn, utcnow())


async def queues_page(request: Request) -> Response:
    return page(request, "queues.html", queues=await run_in_threadpool(_queues, request))


def _workers(request: Request) -> list[workers.WorkerInfo]:
    services = request.state.services
    return workers.live(services.engine, services.settings.lease_timeout)


async def workers_page(request: Request) -> Response:
    return page(request, "workers.html", workers=await run_in_threadpool(_workers, request))
