"""Request bodies: read within the size limit, then decode JSON or a (Rails-style) form.

Accepted: `{"job": {...}}` or the bare object as JSON; `job[field]=value` form fields
(`job[argv][]=...`, `job[env][NAME]=...`). Form fields outside `job[...]` are ignored, as
Rails' strong parameters did (`utf8`, `authenticity_token`, `commit`, ...). As Rails did,
`job[...]` fields in the query string count too (`POST /jobs?job[command]=date` with an empty
body creates a job); a field given both there and in the body is a 422. Form text and query
strings are decoded strictly (service.web.forms).
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import ClientDisconnect, Request

from service.config import Settings
from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from service.web import forms
from service.web.schemas import coerce_form_fields, coerce_json_fields

URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
_JOB_KEY = re.compile(r"^job\[([A-Za-z_]+)\](?:\[([A-Za-z0-9_]*)\])?$")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it exceeds `limit` (chunked ones too)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body is larger than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:  # gone, or cut off by the body timeout (service.web.server)
        raise BadRequest("the connection closed before the body was complete") from None
    return b"".join(chunks)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def read_job_fields(request: Request, settings: Settings) -> dict[str, Any]:
    """The job fields a create or edit request carries (body and query string), not
    validated yet. With JOBRUNNER_UNKNOWN_FIELDS=ignore, what is not a job field is dropped
    (service.web.schemas drops the unknown names), as the original did."""
    ignore = settings.unknown_fields == "ignore"
    query = _form_fields(forms.urlencoded(request.scope.get("query_string", b"")), ignore)
    body = await read_body(request, settings.max_body_size)
    media_type = _media_type(request)
    if _is_json(media_type):
        fields = _json_fields(body, ignore)
    elif media_type == URLENCODED:
        fields = _form_fields(forms.urlencoded(body), ignore)
    elif media_type == MULTIPART:
        content_type = request.headers.get("content-type", "")
        fields = _form_fields(forms.multipart(body, content_type), ignore)
    elif not media_type and not body.strip():
        fields = {}
    else:
        raise UnsupportedMediaType(
            f"unsupported content type {media_type or '(none)'!r}: send application/json, "
            f"{URLENCODED} or {MULTIPART}"
        )
    twice = sorted(query.keys() & fields.keys())
    if twice:
        message = "is given both in the query string and in the body"
        raise ValidationFailed({name: [message] for name in twice})
    return query | fields


def _json_fields(body: bytes, ignore_unknown: bool) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(
        data.get("job"), dict
    ):  # the original's {"job": {...}}
        siblings = sorted(key for key in data if key != "job")
        if siblings and not ignore_unknown:
            raise ValidationFailed(
                {key[:64]: ["is not a known field (the fields go inside job)"] for key in siblings}
            )
        data = data["job"]
    if not isinstance(data, dict):
        raise ValidationFailed({"job": ["must be a JSON object"]})
    return coerce_json_fields(data)


def _form_fields(pairs: forms.Pairs, ignore_unknown: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in pairs:
        if not key.startswith("job["):
            continue
        match = _JOB_KEY.fullmatch(key)
        if match is None:
            if ignore_unknown:
                continue
            raise ValidationFailed({key[:64]: ["is not a known field"]})
        name, sub = match.group(1), match.group(2)
        if sub is None:
            fields[name] = value
        elif sub == "":
            fields.setdefault(name, [])
            if not isinstance(fields[name], list):
                raise ValidationFailed({name: ["is given both as a value and as a list"]})
            fields[name].append(value)
        else:
            fields.setdefault(name, {})
            if not isinstance(fields[name], dict):
                raise ValidationFailed({name: ["is given both as a value and as an object"]})
            fields[name][sub] = value
    return coerce_form_fields(fields)


async def read_json_object(request: Request, settings: Settings, what: str) -> dict[str, Any]:
    """A JSON object body (the schedules': no form, no wrapper, unlike a job's)."""
    body = await read_body(request, settings.max_body_size)
    media_type = _media_type(request)
    if not _is_json(media_type):
        raise UnsupportedMediaType(
            f"unsupported content type {media_type or '(none)'!r}: send application/json"
        )
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValidationFailed({what: ["must be a JSON object"]})
    return data
