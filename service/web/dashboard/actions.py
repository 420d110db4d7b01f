"""What the dashboard's buttons and forms do: cancel, retry, delete, and submit a job (a blank form,
or "run again": one filled in from a job). Each does what its API endpoint does, through the
same code (service.web.routes: service.jobs for the state, the dispatcher for the wake-up and
the cancel notice), then sends the browser to the job's page (303: reloading it does not
send the form again)."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service.errors import ApiError, NotFound, ValidationFailed
from service.policy import CommandNotAllowed
from service.web import routes as api
from service.web.dashboard import csrf
from service.web.dashboard.render import page
from service.web.schemas import coerce_form_fields, parse_create

#: the form's fields, as the page names them
FORM_FIELDS = (
    "command",
    "argv",
    "queue",
    "priority",
    "timeout",
    "max_retries",
    "run_at",
    "env",
)


def _job_id(request: Request) -> int:
    job_id = int(request.path_params["job_id"])
    if job_id > api.MAX_ID:
        raise NotFound(f"no job {job_id}")
    return job_id


def _to_job(job_id: int) -> Response:
    return RedirectResponse(f"/ui/jobs/{job_id}", status_code=303)


async def cancel(request: Request) -> Response:
    csrf.check(request, await csrf.read_form(request))
    job_id = _job_id(request)
    await run_in_threadpool(api._cancel, request.state.services, job_id)
    return _to_job(job_id)


async def retry(request: Request) -> Response:
    csrf.check(request, await csrf.read_form(request))
    job_id = _job_id(request)
    await run_in_threadpool(api._retry, request.state.services, job_id)
    return _to_job(job_id)


async def delete(request: Request) -> Response:
    csrf.check(request, await csrf.read_form(request))
    await run_in_threadpool(api._delete, request.state.services, _job_id(request))
    return RedirectResponse("/ui/jobs", status_code=303)


# --- the submit form ----------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    return [line.strip("\r") for line in text.split("\n") if line.strip()]


def job_fields(form: dict[str, str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The job fields a filled-in form gives (blank ones left out), and the errors of those
    the form itself writes: argv one item per line, env one NAME=value per line."""
    fields: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name in ("command", "queue", "priority", "timeout", "max_retries", "run_at"):
        value = form.get(name, "")
        if value.strip():
            fields[name] = value.strip() if name != "command" else value
    argv = _lines(form.get("argv", ""))
    if argv:
        fields["argv"] = argv
    env: dict[str, str] = {}
    for number, line in enumerate(_lines(form.get("env", "")), 1):
        name, equals, value = line.partition("=")
        if not equals or not name.strip():
            errors.setdefault("env", []).append(f"line {number} is not NAME=value")
            continue
        env[name.strip()] = value
    if env:
        fields["env"] = env
    return coerce_form_fields(fields), errors


def _prefill(request: Request) -> dict[str, str]:
    """The form's values for "run again": those of the job (never its env: not kept to show)."""
    raw = request.query_params.get("from", "")
    if not raw.isdigit() or int(raw) > api.MAX_ID:
        return {}
    job = api._get(request.state.services.engine, int(raw))
    values = {
        "queue": job.queue,
        "priority": str(job.priority),
        "timeout": str(job.timeout),
        "max_retries": str(job.max_retries),
    }
    if job.argv is not None:
        values["argv"] = "\n".join(job.argv)
    else:
        values["command"] = job.command
    return values


def _form_page(
    request: Request, values: dict[str, str], errors: dict[str, list[str]], status: int = 200
) -> Response:
    return page(
        request,
        "new.html",
        status,
        values={name: values.get(name, "") for name in FORM_FIELDS},
        errors=errors,
    )


async def new_job_page(request: Request) -> Response:
    try:
        values = await run_in_threadpool(_prefill, request)
    except NotFound:
        values = {}
    return _form_page(request, values, {})


async def submit(request: Request) -> Response:
    form = await csrf.read_form(request)
    csrf.check(request, form)
    services = request.state.services
    fields, errors = job_fields(form)
    try:
        if errors:
            raise ValidationFailed(errors)
        spec = parse_create(fields, services.settings)
        services.policy.check(spec.command, spec.argv, spec.env)
        await run_in_threadpool(services.queues.admit, spec.queue)
    except ValidationFailed as exc:
        return _form_page(request, form, _on_form(exc.errors), 422)
    except CommandNotAllowed as exc:
        return _form_page(request, form, {"command": [exc.message]}, exc.status_code)
    except ApiError as exc:
        return _form_page(request, form, {"form": [exc.message]}, exc.status_code)
    job, _ = await services.submitter.submit(spec, None)
    request.state.job_id = job.id
    request.state.job_state = job.state
    return _to_job(job.id)


def _on_form(errors: dict[str, list[str]]) -> dict[str, list[str]]:
    """Errors by the form's fields (one not on the form goes at its top)."""
    placed: dict[str, list[str]] = {}
    for name, messages in errors.items():
        placed.setdefault(name if name in FORM_FIELDS else "form", []).extend(
            messages if name in FORM_FIELDS else [f"{name} {m}" for m in messages]
        )
    return placed
