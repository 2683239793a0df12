"""``/docs``: Swagger UI over the API document, served from this machine.

The UI's script and stylesheet come from the ``fastapi-offline`` package (a PyPI
package that ships Swagger UI), so the page works where the product runs, without
the internet. The page has no inline script (``docs.js`` starts the UI), so its CSP
is as strict as the console's: nothing but this origin.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from keyrack.errors import NotFound
from keyrack.routing import Router

DOCS = "/docs"
ASSETS = {
    "swagger-ui-bundle.js": ("fastapi_offline", "static/swagger-ui-bundle.js"),
    "swagger-ui.css": ("fastapi_offline", "static/swagger-ui.css"),
    "docs.js": ("keyrack.http", "docs.js"),
}
"""What the page loads, by the name it uses: (package, file in it)."""
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

router = Router(prefix=DOCS, include_in_schema=False)


@cache
def page(document_url: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Keyrack API</title>
<link rel="icon" href="/favicon.ico">
<link rel="stylesheet" href="{DOCS}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-document="{document_url}"></div>
<script src="{DOCS}/swagger-ui-bundle.js"></script>
<script src="{DOCS}/docs.js"></script>
</body>
</html>
"""


@router.get("")
async def docs(request: Request) -> HTMLResponse:
    """The UI over the app's own document (``openapi_url``)."""
    return HTMLResponse(page(request.app.openapi_url), headers=HEADERS)


@router.get("/{name}")
async def asset(name: str) -> Response:
    if name not in ASSETS:
        raise NotFound(f"no asset {name!r}")
    return Response(
        _read(name),
        media_type=_TYPES[Path(name).suffix],
        headers={**HEADERS, "Cache-Control": "public, max-age=3600"},
    )


@cache
def _read(name: str) -> bytes:
    package, path = ASSETS[name]
    return files(package).joinpath(path).read_bytes()
