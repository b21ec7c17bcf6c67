"""`rust_asgi_server.run(app)` with an app object defined in the program itself.

    python examples/python/run_app_object.py 127.0.0.1:8000

Serves until SIGINT/SIGTERM, exactly as `rust-asgi-server` does (same options, log lines
and drain); tests/python/test_wheel.py runs it and CI type-checks it with `mypy --strict`.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import rust_asgi_server


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"served by an app object"})


if __name__ == "__main__":
    rust_asgi_server.run(
        app,
        bind=sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8000",
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
