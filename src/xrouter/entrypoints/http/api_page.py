"""The /docs page (Swagger UI), with its script, styles and icon served by the gateway itself.

Litestar's Swagger plugin loads them from a public CDN by default, so behind a firewall or
offline (common where GigaChat and Yandex are used) the page stays blank. The files come from
an installed wheel instead, flask-swagger-ui, whose `dist/` folder is Swagger UI's own release
files. Only the files are read: the package's Flask code is never imported.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

DOCS_PATH = "/docs"
"""Where the OpenAPI router lives (the page at `/docs`, its document at `/docs/openapi.json`)."""

_PACKAGE = "flask_swagger_ui"
_SCRIPT = "swagger-ui-bundle.js"
_PRESET = "swagger-ui-standalone-preset.js"
_STYLES = "swagger-ui.css"
_ICON = "favicon-32x32.png"
# The asset URLs carry Swagger UI's version, so a URL's content never changes and browsers may
# keep it for a year without asking again; an upgrade changes the URLs.
_CACHE = CacheControlHeader(public=True, max_age=365 * 24 * 3600, immutable=True)


@dataclass(frozen=True)
class SwaggerUiFiles:
    """Swagger UI's release files as installed: their folder and the release's version."""

    directory: Path
    version: str

    @property
    def url_path(self) -> str:
        """The gateway's path that serves the folder, e.g. `/docs/assets/5.34.0`."""
        return f"{DOCS_PATH}/assets/{self.version}"


def installed_swagger_ui() -> SwaggerUiFiles:
    """Finds the installed release files (without importing the package, which needs Flask).

    Raises RuntimeError naming the package when it is missing or lacks a file the page needs,
    so a broken install stops the gateway at startup instead of serving a blank page.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise RuntimeError(
            f"the /docs page needs the Python package {_PACKAGE} (pip install flask-swagger-ui),"
            " or set XR_DOCS_ENABLED=false"
        )
    directory = Path(locations[0]) / "dist"
    missing = [
        name
        for name in ("VERSION", _SCRIPT, _PRESET, _STYLES, _ICON)
        if not (directory / name).is_file()
    ]
    if missing:
        raise RuntimeError(
            f"{directory} lacks {', '.join(missing)}: reinstall flask-swagger-ui for /docs,"
            " or set XR_DOCS_ENABLED=false"
        )
    version = (directory / "VERSION").read_text(encoding="utf-8").strip().removeprefix("v")
    return SwaggerUiFiles(directory, version)


def swagger_page(files: SwaggerUiFiles) -> SwaggerRenderPlugin:
    """The page at the OpenAPI router's root, pointing at the gateway's copies of the files."""
    base = files.url_path
    return SwaggerRenderPlugin(
        path="/",
        js_url=f"{base}/{_SCRIPT}",
        css_url=f"{base}/{_STYLES}",
        standalone_preset_js_url=f"{base}/{_PRESET}",
        favicon=f"<link rel='icon' type='image/png' href='{base}/{_ICON}'>",
    )


def swagger_assets_router(files: SwaggerUiFiles) -> Router:
    """`GET /docs/assets/<version>/<file>`: the release files, cacheable for a year."""
    return create_static_files_router(
        path=files.url_path,
        directories=[files.directory],
        name="swagger_ui_assets",
        cache_control=_CACHE,
        include_in_schema=False,
    )
