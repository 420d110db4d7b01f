"""GET /jobs/{id}/deliveries (API.md section 8): each delivery attempt of a job's callback
events, to any URL, oldest first."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service import queries
from service.db import transaction
from service.errors import NotFound
from service.resource import format_time

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

MAX_ID = 2**63 - 1


def delivery_to_json(item: queries.Delivery) -> dict[str, Any]:
    """A delivery as its DeliveryResource (service.web.schemas)."""
    return {
        "event_id": item.event_id,
        "url": item.url,
        "attempt": item.attempt,
        "at": format_time(item.at),
        "status_code": item.status_code,
        "error": item.error,
        "next_attempt_at": format_time(item.next_attempt_at),
    }


def _deliveries(engine: Engine, job_id: int) -> list[dict[str, Any]]:
    with transaction(engine) as conn:
        found = queries.deliveries(conn, job_id)
        if not found and queries.get(conn, job_id) is None:
            raise NotFound(f"no job {job_id}")
    return [delivery_to_json(item) for item in found]


async def job_deliveries(request: Request) -> Response:
    job_id = int(request.path_params["job_id"])
    if job_id > MAX_ID:
        raise NotFound(f"no job {job_id}")
    request.state.job_id = job_id
    engine = request.state.services.engine
    return JSONResponse(await run_in_threadpool(_deliveries, engine, job_id))
