"""Serve an app factory exactly as `xrouter serve` serves the gateway, at whatever revision of
xrouter is on the path: the product's own CLI runs, with only the app factory replaced.

    python bench/serve_as_product.py MODULE:FACTORY PORT

The benchmark uses it for the gateway variants that need another factory (bench/app_nofreeze.py),
so that they run on the same server, connection protocol and options as the product. The gateway
itself is started with the `xrouter` console script (servers.py).
"""

from __future__ import annotations

import functools
import importlib.util
import sys

from xrouter.entrypoints.cli import main as cli


def _serve_with(target: str) -> None:
    """Point `xrouter serve` at `target`. Since issue 9 it runs
    `entrypoints/http/server.py:serve` (GatewayServer, the connection-limiting protocol),
    which takes the app as an option; before, `cli.serve` called `uvicorn.run(APP_FACTORY,
    ...)` itself."""
    if importlib.util.find_spec("xrouter.entrypoints.http.server") is not None:
        from xrouter.entrypoints.http import server

        server.serve = functools.partial(server.serve, app=target)
    else:
        cli.APP_FACTORY = target  # type: ignore[attr-defined]


def main() -> int:
    target, port = sys.argv[1], sys.argv[2]
    _serve_with(target)
    return cli.main(["serve", "--host", "127.0.0.1", "--port", port, "--workers", "1"])


if __name__ == "__main__":
    sys.exit(main())
