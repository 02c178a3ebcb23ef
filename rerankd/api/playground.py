"""The playground: `/` redirects to `/playground`, a page served from the package's own files.

Plain HTML, CSS and JavaScript shipped as package data (`rerankd/static/playground/`): no
build step, no CDN, nothing fetched from anywhere but this server. The page and its assets
are public (the page asks for the API key and sends it with each API call); a strict Content
Security Policy keeps the page to this origin.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

router = APIRouter(include_in_schema=False)

_ASSETS = {
    "/playground": ("index.html", "text/html; charset=utf-8"),
    "/playground/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/playground/style.css": ("style.css", "text/css; charset=utf-8"),
    "/playground/icon.svg": ("icon.svg", "image/svg+xml"),
}
# Paths the request guard lets through without credentials.
PLAYGROUND_PATHS = frozenset({"/", *_ASSETS})

_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate: a server upgrade must not run a stale script
}


@cache
def asset(name: str) -> bytes:
    return resources.files("rerankd").joinpath("static", "playground", name).read_bytes()


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/playground", status_code=307)


def _handler(path: str) -> Callable[[], Awaitable[Response]]:
    name, media_type = _ASSETS[path]

    async def serve() -> Response:
        return Response(asset(name), media_type=media_type, headers=_HEADERS)

    return serve


for _path in _ASSETS:
    router.add_api_route(_path, _handler(_path), methods=["GET"])
