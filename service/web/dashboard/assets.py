"""The dashboard's own static files (static/): a stylesheet and a small script, no third-party
code and no build step. Each is served from memory at a fixed path with its content hash in
the query (`/ui/static/app.js?v=1a2b3c4d`), cached by browsers for a year when the hash
matches (a new version has a new URL), for five minutes otherwise, with an ETag."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

STATIC = Path(__file__).parent / "static"
PATH = "/ui/static/"  # session.STATIC_PREFIX
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "public, max-age=300"


@dataclass(frozen=True)
class Asset:
    name: str
    body: bytes
    version: str

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[Path(self.name).suffix]


def _load() -> dict[str, Asset]:
    found = {}
    for path in sorted(STATIC.iterdir()):
        if path.suffix in MEDIA_TYPES:
            body = path.read_bytes()
            found[path.name] = Asset(path.name, body, hashlib.sha256(body).hexdigest()[:12])
    return found


ASSETS = _load()


def url(name: str) -> str:
    """The URL of a static file, its version included."""
    return f"{PATH}{name}?v={ASSETS[name].version}"


async def serve(request: Request) -> Response:
    asset = ASSETS[request.url.path.removeprefix(PATH)]
    etag = f'"{asset.version}"'
    cache = IMMUTABLE if request.query_params.get("v") == asset.version else REVALIDATE
    headers = {"ETag": etag, "Cache-Control": cache}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)
