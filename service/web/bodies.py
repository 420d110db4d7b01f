"""Request bodies: read within the size limit, then decode JSON or a (Rails-style) form.

Accepted: `{"job": {...}}` or the bare object as JSON; `job[field]=value` form fields
(`job[argv][]=...`, `job[env][NAME]=...`). Form fields outside `job[...]` are ignored, as
Rails' strong parameters did (`utf8`, `authenticity_token`, `commit`, ...).
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request

from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from service.web.schemas import coerce_form_fields, coerce_json_fields

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
MAX_FORM_FIELDS = 200
_JOB_KEY = re.compile(r"^job\[([A-Za-z_]+)\](?:\[([A-Za-z0-9_]*)\])?$")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it exceeds `limit` (chunked ones too)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    # Starlette's form parser reads the cached body instead of the (consumed) stream.
    request._body = body
    return body


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def read_job_fields(request: Request, limit: int) -> dict[str, Any]:
    """The job fields a create or edit request carries, not validated yet."""
    body = await read_body(request, limit)
    media_type = _media_type(request)
    if _is_json(media_type):
        return _json_fields(body)
    if media_type in FORM_TYPES:
        return await _form_fields(request)
    if not media_type and not body.strip():
        return {}
    raise UnsupportedMediaType(
        f"unsupported content type {media_type or '(none)'!r}: send application/json, "
        "application/x-www-form-urlencoded or multipart/form-data"
    )


def _json_fields(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(
        data.get("job"), dict
    ):  # the original's {"job": {...}}
        siblings = sorted(key for key in data if key != "job")
        if siblings:
            raise ValidationFailed(
                {key[:64]: ["is not a known field (the fields go inside job)"] for key in siblings}
            )
        data = data["job"]
    if not isinstance(data, dict):
        raise ValidationFailed({"job": ["must be a JSON object"]})
    return coerce_json_fields(data)


async def _form_fields(request: Request) -> dict[str, Any]:
    form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
    fields: dict[str, Any] = {}
    for key, value in form.multi_items():
        if not key.startswith("job["):
            continue
        match = _JOB_KEY.fullmatch(key)
        if match is None:
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
