"""A small but realistic Starlette app for the end-to-end tests.

- ``GET /``                     JSON greeting
- ``GET /items/{item_id:int}``  path and query parameters (``?q=``), named route ``item``
- ``POST /echo-json``           JSON body in, JSON out (400 on invalid JSON)
- ``GET /stream?lines=N``       ``StreamingResponse`` from an async generator
- ``GET /teapot``               ``HTTPException(418)``
- ``GET /crash``                an unhandled exception (500 from Starlette's middleware)
- ``POST /background?token=T``  answers, then a background task records ``T``
- ``GET /background-log``       the tokens recorded by background tasks
- ``GET /url-for``              ``request.url_for("item")``, which includes ``root_path``
- ``GET /state``                what the lifespan put in the app state
- ``GET /file``                 this file through ``FileResponse``
"""

import asyncio
import contextlib
import json

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.routing import Route

background_log = []


@contextlib.asynccontextmanager
async def lifespan(app):
    yield {"greeting": "set by lifespan"}


async def homepage(request):
    return JSONResponse({"app": "starlette", "hello": "world"})


async def item(request):
    return JSONResponse({"item_id": request.path_params["item_id"], "q": request.query_params.get("q")})


async def echo_json(request):
    try:
        data = await request.json()
    except json.JSONDecodeError:
        return JSONResponse({"error": "invalid JSON"}, status_code=400)
    return JSONResponse({"received": data})


async def stream(request):
    lines = int(request.query_params.get("lines", "5"))

    async def generate():
        for number in range(lines):
            yield f"line {number}\n"
            await asyncio.sleep(0)

    return StreamingResponse(generate(), media_type="text/plain")


async def teapot(request):
    raise HTTPException(status_code=418, detail="I'm a teapot")


async def crash(request):
    raise RuntimeError("starlette_app: crash route")


async def _record_token(token):
    await asyncio.sleep(0.05)
    background_log.append(token)


async def background(request):
    token = request.query_params["token"]
    return JSONResponse({"accepted": token}, background=BackgroundTask(_record_token, token))


async def background_log_route(request):
    return JSONResponse(background_log)


async def url_for(request):
    return JSONResponse(
        {"url": str(request.url_for("item", item_id=7)), "root_path": request.scope.get("root_path", "")}
    )


async def state(request):
    return JSONResponse({"greeting": request.state.greeting})


async def file(request):
    return FileResponse(__file__, media_type="text/x-python")


app = Starlette(
    routes=[
        Route("/", homepage),
        Route("/items/{item_id:int}", item, name="item"),
        Route("/echo-json", echo_json, methods=["POST"]),
        Route("/stream", stream),
        Route("/teapot", teapot),
        Route("/crash", crash),
        Route("/background", background, methods=["POST"]),
        Route("/background-log", background_log_route),
        Route("/url-for", url_for),
        Route("/state", state),
        Route("/file", file),
    ],
    lifespan=lifespan,
)
