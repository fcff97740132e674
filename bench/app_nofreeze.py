"""The gateway without gc.freeze(): the real app, plus a last startup hook that undoes the
freeze, so the benchmark can measure p99 with and without it."""

from __future__ import annotations

import gc
from typing import Any

from litestar import Litestar

from xrouter.entrypoints.http import app as gateway


def _add_unfreeze(app: Litestar) -> Litestar:
    async def unfreeze() -> None:
        gc.unfreeze()

    app.on_startup.append(unfreeze)  # runs after the app's own hook, which froze
    return app


def create_app() -> Any:
    """The gateway app (as `create_app` builds it) whose startup ends with gc.unfreeze()."""
    if hasattr(gateway, "create_litestar"):  # create_app wraps Litestar in ASGI middleware
        build = gateway.create_litestar
        gateway.create_litestar = lambda *args, **kwargs: _add_unfreeze(build(*args, **kwargs))
        return gateway.create_app()
    return _add_unfreeze(gateway.create_app())
