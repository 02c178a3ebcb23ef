"""`/docs` (Swagger UI) and `/redoc` from files shipped in a package, never from a CDN.

FastAPI's own pages load Swagger UI and ReDoc from a CDN: blank on an offline or air-gapped
machine. The `fastapi-offline` package (MIT) ships those files; they are served from here, so
the reference works wherever rerankd runs, like the playground.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

router = APIRouter(include_in_schema=False)

ASSET_PREFIX = "/docs/assets/"
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
# Nothing but this origin, should a future ReDoc or Swagger UI reach for a CDN.
_CSP = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' "
        "'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
        "worker-src 'self' blob:; base-uri 'none'; frame-ancestors 'none'"
    )
}
# Paths the request guard lets through without credentials.
DOCS_PATHS = frozenset({"/docs", "/redoc", *(ASSET_PREFIX + name for name in _ASSETS)})


# ReDoc's sidebar footer always shows its vendor's logo from a CDN; ours is served instead.
_REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"


@cache
def asset(name: str) -> bytes:
    data = resources.files("fastapi_offline").joinpath("static", name).read_bytes()
    if name == "redoc.standalone.js":
        data = data.replace(_REDOC_LOGO, (ASSET_PREFIX + "favicon.png").encode())
    return data


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return _with_csp(
        get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="rerankd - API reference",
            swagger_js_url=ASSET_PREFIX + "swagger-ui-bundle.js",
            swagger_css_url=ASSET_PREFIX + "swagger-ui.css",
            swagger_favicon_url=ASSET_PREFIX + "favicon.png",
        )
    )


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    return _with_csp(
        get_redoc_html(
            openapi_url="/openapi.json",
            title="rerankd - API reference",
            redoc_js_url=ASSET_PREFIX + "redoc.standalone.js",
            redoc_favicon_url=ASSET_PREFIX + "favicon.png",
            with_google_fonts=False,
        )
    )


def _with_csp(page: HTMLResponse) -> HTMLResponse:
    page.headers.update(_CSP)
    return page


def _handler(name: str) -> Callable[[], Awaitable[Response]]:
    async def serve() -> Response:
        return Response(asset(name), media_type=_ASSETS[name])

    return serve


for _name in _ASSETS:
    router.add_api_route(ASSET_PREFIX + _name, _handler(_name), methods=["GET"])
