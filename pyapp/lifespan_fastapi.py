"""FastAPI apps for the lifespan tests, one per style of startup/shutdown code.

- ``app_events``:   ``@app.on_event("startup")`` / ``@app.on_event("shutdown")`` handlers that
  set ``app.state.token`` and mark ``startup`` / ``shutdown`` (see ``lifespan_apps.mark``).
- ``app_lifespan``: a ``lifespan=`` async context manager yielding ``{"token": ...}``, read
  back through ``request.state``; marks ``startup`` and ``shutdown``.

Both serve ``GET /state`` → ``{"token": ...}`` and ``GET /sleep?s=S``.
"""

import asyncio
import contextlib
import warnings

from fastapi import FastAPI, Request

from pyapp.lifespan_apps import mark

with warnings.catch_warnings():
    # on_event is deprecated in favour of lifespan=, but it is what many apps still use.
    warnings.simplefilter("ignore", DeprecationWarning)

    app_events = FastAPI()

    @app_events.on_event("startup")
    async def _startup():
        await asyncio.sleep(0.2)
        app_events.state.token = "fastapi-on-event"
        mark("startup")

    @app_events.on_event("shutdown")
    async def _shutdown():
        mark("shutdown")


@app_events.get("/state")
async def events_state():
    return {"token": getattr(app_events.state, "token", None)}


@app_events.get("/sleep")
async def events_sleep(s: float = 1.0):
    await asyncio.sleep(s)
    return {"slept": s}


@contextlib.asynccontextmanager
async def _lifespan(app):
    await asyncio.sleep(0.2)
    mark("startup")
    try:
        yield {"token": "fastapi-lifespan"}
    finally:
        mark("shutdown")


app_lifespan = FastAPI(lifespan=_lifespan)


@app_lifespan.get("/state")
async def lifespan_state(request: Request):
    return {"token": request.state.token}


@app_lifespan.get("/sleep")
async def lifespan_sleep(s: float = 1.0):
    await asyncio.sleep(s)
    return {"slept": s}
