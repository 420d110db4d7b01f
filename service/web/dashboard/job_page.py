"""A job's page (`/ui/jobs/{id}`): why it ended at the top, then the end of its output
(following live while it runs: static/app.js on the existing SSE stream, resuming with
Last-Event-ID), every field, and the buttons its state and the session's scope allow. Also the
output itself (`/ui/jobs/{id}/output`): a download, or the live stream (`?follow=1`), both the
API's own endpoint (service.web.routes.job_output) behind the session."""

from __future__ import annotations

import dataclasses

from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from service import queries
from service.db import transaction, utcnow
from service.errors import NotFound
from service.queries import Job, StoredOutput
from service.scopes import Scope
from service.states import FINAL, State
from service.web import routes as api
from service.web.access import granted
from service.web.dashboard.render import between, duration, page

#: the end of the output shown on the page; the download has all that is kept
TAIL_BYTES = 64 * 1024
#: the fields shown apart (at the top, or as the output pane), or not at all (`held`: the API
#: does not show it either)
HIDDEN_FIELDS = ("output_offset", "output_bytes", "held")
RETRYABLE = frozenset({State.FAILED, State.CANCELLED})


def _load(engine: Engine, job_id: int) -> tuple[Job, StoredOutput, list[queries.Delivery]]:
    """The job, its output, and its callback deliveries (what GET /jobs/{id}/deliveries reads)."""
    with transaction(engine) as conn:
        job = queries.get(conn, job_id)
        stored = queries.output(conn, job_id)
        deliveries = queries.deliveries(conn, job_id) if job is not None else []
    if job is None or stored is None:
        raise NotFound(f"no job {job_id}")
    return job, stored, deliveries


def _tail(stored: StoredOutput) -> tuple[str, int, bool]:
    """The end of the output as text, the byte offset where it starts, and whether there is
    more before it (dropped by the output limit, or left to the download)."""
    data = stored.data[-TAIL_BYTES:]
    start = stored.total - len(data)
    if start > stored.offset:  # cut at a character, not inside one
        while data and (data[0] & 0xC0) == 0x80:
            data = data[1:]
            start += 1
    return data.decode("utf-8", "replace"), start, start > 0


def timing(job: Job) -> dict[str, str]:
    """How long it waited (since it was due) and ran, as durations."""
    due = max(job.created_at, job.run_at)
    if job.started_at is not None:
        waited = duration(between(due, job.started_at))
    elif job.state in FINAL or job.run_at > utcnow():
        waited = "—"
    else:
        waited = f"{duration(between(due, None))} so far"
    if job.started_at is None:
        ran = "—"
    elif job.finished_at is None or job.state not in FINAL:
        ran = f"{duration(between(job.started_at, None))} so far"
    else:
        ran = duration(between(job.started_at, job.finished_at))
    return {"waited": waited, "ran": ran}


def actions(job: Job, scope: Scope | None) -> dict[str, bool]:
    """Which buttons the page shows: those the state allows and the session may press."""
    may = scope is not None and scope.allows(Scope.SUBMIT)
    return {
        "cancel": may and job.state not in FINAL,
        "retry": may and job.state in RETRYABLE,
        "run_again": may,
        "delete": scope is not None and scope.allows(Scope.ADMIN),
    }


async def job_page(request: Request) -> Response:
    job_id = int(request.path_params["job_id"])
    if job_id > api.MAX_ID:
        raise NotFound(f"no job {job_id}")
    job, stored, deliveries = await run_in_threadpool(_load, request.state.services.engine, job_id)
    text, start, earlier = _tail(stored)
    fields = [
        (f.name, getattr(job, f.name))
        for f in dataclasses.fields(job)
        if f.name not in HIDDEN_FIELDS
    ]
    return page(
        request,
        "job.html",
        job=job,
        fields=fields,
        output=text,
        output_start=start,
        output_end=stored.total,
        output_earlier=earlier,
        output_dropped=stored.offset,
        final=job.state in FINAL,
        timing=timing(job),
        actions=actions(job, granted(request.scope)),
        deliveries=deliveries,
    )


async def job_output(request: Request) -> Response:
    """The API's output endpoint for the session: the stream, or the whole output to save."""
    response = await api.job_output(request)
    if request.query_params.get("follow") not in ("1", "true"):
        job_id = request.path_params["job_id"]
        response.headers["content-disposition"] = f'attachment; filename="job-{job_id}.log"'
    return response
