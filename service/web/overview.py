"""GET /queues and GET /workers (API.md section 11): what waits and runs where, and who runs it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service import queries, workers
from service.db import transaction, utcnow
from service.web.schemas import QueueResource, WorkerResource, format_time

if TYPE_CHECKING:
    from service.web.routes import Services


def _services(request: Request) -> Services:
    services: Services = request.state.services
    return services


def queue_rows(services: Services) -> list[tuple[queries.QueueStats, int | None]]:
    """Every queue that has non-final jobs or a cap, by name, with its cap (or None): what
    GET /queues shows, and the dashboard's queues page."""
    with transaction(services.engine) as conn:
        stats = queries.queue_stats(conn, utcnow())
    caps = services.settings.queue_caps
    seen = {queue.name for queue in stats}
    idle = [queries.QueueStats(name, 0, 0, None) for name in caps if name not in seen]
    return [
        (queue, caps.get(queue.name))
        for queue in sorted([*stats, *idle], key=lambda queue: queue.name)
    ]


def _queues(request: Request) -> list[dict[str, Any]]:
    return [
        QueueResource(
            name=queue.name,
            waiting=queue.waiting,
            running=queue.running,
            oldest_waiting_seconds=(
                round(queue.oldest_waiting_seconds, 3)
                if queue.oldest_waiting_seconds is not None
                else None
            ),
            concurrency=cap,
        ).model_dump()
        for queue, cap in queue_rows(_services(request))
    ]


async def list_queues(request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(_queues, request))


def _workers(request: Request) -> list[dict[str, Any]]:
    services = _services(request)
    return [
        WorkerResource(
            name=worker.name,
            host=worker.host,
            pid=worker.pid,
            queues=worker.queues,
            started_at=format_time(worker.started_at) or "",
            last_seen_at=format_time(worker.last_seen_at) or "",
            running=worker.running,
        ).model_dump()
        for worker in workers.live(services.engine, services.settings.lease_timeout)
    ]


async def list_workers(request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(_workers, request))
