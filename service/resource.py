"""The job resource (API.md section 2) as JSON: what every endpoint returns, and the `data` of a
completion callback's event (service.callbacks renders it in the transaction that ends a job).

`service.web.schemas.JobResource` is its OpenAPI model; a test holds the two together.
"""

from __future__ import annotations

import datetime as dt
from typing import Any


def format_time(value: dt.datetime | None) -> str | None:
    """UTC, ISO 8601 with milliseconds and Z, as API.md section 2 says."""
    if value is None:
        return None
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}"
        f":{value.second:02d}.{value.microsecond // 1000:03d}Z"
    )


def job_to_json(job: Any) -> dict[str, Any]:
    """A job as its JobResource, written out by hand: GET /jobs returns up to 1,000 of them,
    and a model per job would cost more than the query (a test holds the two together).
    Never the env (its values may be secrets), nor the output."""
    return {
        "id": job.id,
        "command": job.command,
        "argv": job.argv,
        "queue": job.queue,
        "priority": job.priority,
        "state": job.state,
        "attempts": job.attempts,
        "max_retries": job.max_retries,
        "timeout": job.timeout,
        "exit_code": job.exit_code,
        "last_error": job.last_error,
        "end_reason": job.end_reason,
        "exit_signal": job.exit_signal,
        "run_at": format_time(job.run_at),
        "locked_at": format_time(job.locked_at),
        "locked_by": job.locked_by,
        "started_at": format_time(job.started_at),
        "finished_at": format_time(job.finished_at),
        "failed_at": format_time(job.failed_at),
        "created_at": format_time(job.created_at),
        "updated_at": format_time(job.updated_at),
        "cancel_requested": job.cancel_requested_at is not None,
        "output_bytes": job.output_bytes,
        "output_truncated": job.output_offset > 0,
        "concurrency_key": job.concurrency_key,
        "concurrency_limit": job.concurrency_limit,
        "schedule_id": job.schedule_id,
        "callback_url": job.callback_url,
    }
