"""The pages: the dashboard at /ui (`/` redirects there) and the API docs at /docs and /redoc, every file served
from this package, so that they work without internet. The pages hold no data: what they show comes from the
API (`/v1/health`, `/v1/models`, `/v1/dashboard/...`), which asks for the key when keys are set."""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response

router = APIRouter(include_in_schema=False)

# name -> media type; nothing else in the folders is served
UI_FILES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# Swagger UI 5 and ReDoc as fastapi-offline ships them (Swagger UI: Apache-2.0, ReDoc and the package: MIT)
DOCS_FILES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
}


# The pages may load nothing from elsewhere: the browser refuses it before any request goes out (ReDoc's footer
# logo would come from its CDN), and a script injected through a page could not send data away either.
# Swagger UI and ReDoc start from an inline script; the dashboard has none. Neither page may be framed.
UI_POLICY = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; frame-ancestors 'none'"
)


def _ui_folder() -> Traversable:
    return resources.files("mlx_router").joinpath("ui")


def _docs_folder() -> Traversable:
    return resources.files("fastapi_offline").joinpath("static")


def _file(folder: Traversable, name: str, types: dict[str, str], cache: str) -> Response:
    if name not in types:
        raise HTTPException(status_code=404, detail=f"no file {name!r}")
    body = folder.joinpath(name).read_bytes()
    headers = {"Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    if name.endswith(".html"):
        headers["Content-Security-Policy"] = UI_POLICY
    return Response(body, media_type=types[name], headers=headers)


def _docs_page(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_POLICY
    return page


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui")
async def dashboard() -> Response:
    # no-cache: a browser revalidates, so an upgraded server shows its new page at once
    return _file(_ui_folder(), "index.html", UI_FILES, "no-cache")


@router.get("/ui/{name}")
async def dashboard_file(name: str) -> Response:
    return _file(_ui_folder(), name, UI_FILES, "no-cache")


@router.get("/docs/assets/{name}")
async def docs_file(name: str) -> Response:
    return _file(_docs_folder(), name, DOCS_FILES, "public, max-age=86400")


@router.get("/docs")
async def swagger(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    page = get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - API docs",
        swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
        swagger_favicon_url=f"{root}/ui/favicon.svg",
        # no badge from the online validator: it would send the schema to a third party
        swagger_ui_parameters={"validatorUrl": None},
    )
    return _docs_page(page)


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    page = get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - API reference",
        redoc_js_url=f"{root}/docs/assets/redoc.standalone.js",
        redoc_favicon_url=f"{root}/ui/favicon.svg",
        with_google_fonts=False,
    )
    return _docs_page(page)
