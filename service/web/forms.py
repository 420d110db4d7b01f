"""Form bodies and query strings as (name, value) pairs, decoded strictly as UTF-8.

Starlette's form parser decodes bytes that are not UTF-8 as Latin-1, and percent-escapes that
are not UTF-8 as replacement characters: a job would store text its client never sent. Here
every name and value is decoded as UTF-8 with `surrogateescape`, so that each byte that is not
part of valid UTF-8 (an invalid byte, an overlong form, an encoded surrogate) becomes a lone
surrogate, which validation (service.web.schemas) refuses with a 422 naming the field, exactly
as it refuses a lone surrogate sent in JSON (`"\\ud800"`). Multipart bodies are split by
python-multipart, as Starlette does; files are refused.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.errors import BadRequest

MAX_FIELDS = 200
Pairs = list[tuple[str, str]]


def text(raw: bytes) -> str:
    """Bytes as text: UTF-8, with each byte that is not valid UTF-8 as a lone surrogate."""
    return raw.decode("utf-8", "surrogateescape")


def _too_many() -> BadRequest:
    return BadRequest(f"too many form fields (at most {MAX_FIELDS})")


def urlencoded(data: bytes) -> Pairs:
    """`a=1&b=2` (a form body or a query string) as pairs, `+` as a space."""
    pairs: Pairs = []
    for piece in data.split(b"&"):
        if not piece:
            continue
        name, _, value = piece.partition(b"=")
        pairs.append((_unquoted(name), _unquoted(value)))
        if len(pairs) > MAX_FIELDS:
            raise _too_many()
    return pairs


def _unquoted(raw: bytes) -> str:
    return text(unquote_to_bytes(raw.replace(b"+", b" ")))


class _Part:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.data: list[bytes] = []


def multipart(data: bytes, content_type: str) -> Pairs:
    """A `multipart/form-data` body as pairs; 400 if it is malformed or holds a file."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("malformed multipart body: its Content-Type names no boundary")
    parts: list[_Part] = []
    field, value = bytearray(), bytearray()

    def on_part_begin() -> None:
        parts.append(_Part())

    def on_header_field(chunk: bytes, start: int, end: int) -> None:
        field.extend(chunk[start:end])

    def on_header_value(chunk: bytes, start: int, end: int) -> None:
        value.extend(chunk[start:end])

    def on_header_end() -> None:
        parts[-1].headers.append((bytes(field).lower(), bytes(value)))
        field.clear()
        value.clear()

    def on_part_data(chunk: bytes, start: int, end: int) -> None:
        parts[-1].data.append(chunk[start:end])

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
        },
    )
    try:
        parser.write(data)
        parser.finalize()
    except FormParserError as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from None
    if len(parts) > MAX_FIELDS:
        raise _too_many()
    return [_pair(part) for part in parts]


def _pair(part: _Part) -> tuple[str, str]:
    disposition = dict(part.headers).get(b"content-disposition")
    if disposition is None:
        raise BadRequest("malformed multipart body: a part has no Content-Disposition")
    _, options = parse_options_header(disposition)
    if b"filename" in options:
        raise BadRequest("files are not accepted: send the job's fields as form fields")
    return text(options.get(b"name", b"")), text(b"".join(part.data))
