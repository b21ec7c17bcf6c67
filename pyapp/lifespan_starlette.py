"""Starlette app whose ``lifespan=`` async context manager yields state (lifespan tests).

Startup sleeps ``LIFESPAN_STARTUP_DELAY`` seconds (default 0.2) and yields
``{"token": "starlette-lifespan", "started_at": ...}``, which Starlette exposes as
``request.state``. The code after ``yield`` marks ``shutdown`` (see ``lifespan_apps.mark``).
With ``LIFESPAN_FAIL_STARTUP`` set, the context manager raises before yielding.

- ``GET /state``          ``request.state`` as JSON
- ``GET /sleep?s=S``      answers ``slept S`` after S seconds
"""

import asyncio
import contextlib
import os
import time

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from pyapp.lifespan_apps import mark

STARTUP_DELAY = float(os.environ.get("LIFESPAN_STARTUP_DELAY", "0.2"))
FAIL_MESSAGE = "starlette startup failed: cache cluster has no nodes"


@contextlib.asynccontextmanager
async def lifespan(app):
    mark("startup-begin")
    await asyncio.sleep(STARTUP_DELAY)
    if os.environ.get("LIFESPAN_FAIL_STARTUP"):
        raise RuntimeError(FAIL_MESSAGE)
    started_at = time.time()
    mark("startup", started_at=started_at)
    try:
        yield {"token": "starlette-lifespan", "started_at": started_at}
    finally:
        mark("shutdown")


async def state(request):
    return JSONResponse({"token": request.state.token, "started_at": request.state.started_at})


async def sleep(request):
    seconds = float(request.query_params.get("s", "1"))
    await asyncio.sleep(seconds)
    return PlainTextResponse(f"slept {request.query_params.get('s', '1')}")


app = Starlette(routes=[Route("/state", state), Route("/sleep", sleep)], lifespan=lifespan)
