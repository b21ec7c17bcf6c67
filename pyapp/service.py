"""The items service: the FastAPI app the migration examples serve (examples/*.rs).

It stands for the Python service a team is moving to Axum one route at a time, so it is
written the way such a service usually is: an in-memory store seeded at startup (lifespan),
pydantic models, path and query parameters, JSON bodies, 404/422 errors, a router mounted
twice (unversioned and under ``/api/v1``), and a middleware that logs every request with
its request id.

    python -m uvicorn pyapp.service:app --port 3000        # Python alone
    cargo run --example mixed_routes                      # GET /items in Rust, rest here

Endpoints (each ``/items…`` one also exists under ``/api/v1``):

- ``GET    /items?limit=&q=``  the items, by id; ``q`` filters on the name (case-insensitive
  substring), ``limit`` is 1..100 (default 50); 422 when it is not.
- ``POST   /items``            create from ``{"name", "price", "tags"}``; 201, 422 when invalid
- ``GET    /items/{id}``       one item; 404 ``{"detail": "Item not found"}``
- ``PUT    /items/{id}``       replace an item; 404, 422
- ``DELETE /items/{id}``       204; 404
- ``GET    /health``           ``{"status": "ok"}``
- ``GET    /api/v1/reports/summary``  counts and total value, per tag
- ``GET    /slow?seconds=S``   answers after S seconds (to show timeouts)
- ``GET    /busy?seconds=S``   answers after keeping the event loop busy S seconds (a
  blocking call in async code)
- ``/whoami`` and ``/…/whoami`` (any prefix, any method): what this app saw of the request —
  method, path, raw_path, query_string, root_path, body, request id — so a Rust router in
  front can be checked to pass requests through unchanged.

Every response from this app carries ``x-served-by: python``; the Rust handlers of the
examples set ``x-served-by: rust``. The seed data must stay identical to
``examples/common/items.rs``: the contract test (tests/python/test_examples.py) compares
the two.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import uuid
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

logger = logging.getLogger("pyapp.service")
if not logger.handlers:
    # The service logs on stderr by itself, under uvicorn and inside rust-asgi-server alike.
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

# The current request's id, for any log line written while handling it.
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# The catalogue every fresh process starts with. examples/common/items.rs serves the same.
SEED_ITEMS = [
    {"id": 1, "name": "Widget", "price": 9.99, "tags": ["tools"]},
    {"id": 2, "name": "Gadget", "price": 24.5, "tags": ["tools", "electronics"]},
    {"id": 3, "name": "Gizmo", "price": 4.25, "tags": []},
    {"id": 4, "name": "Sprocket", "price": 0.75, "tags": ["parts"]},
    {"id": 5, "name": "Widget Pro", "price": 49.0, "tags": ["tools", "premium"]},
]


class ItemIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    price: float = Field(ge=0)
    tags: list[str] = []


class Item(BaseModel):
    id: int
    name: str
    price: float
    tags: list[str]


class Store:
    """What a database would be in a real service."""

    def __init__(self):
        self.items: dict[int, Item] = {}
        self.next_id = 1

    def reset(self):
        self.items = {seed["id"]: Item(**seed) for seed in SEED_ITEMS}
        self.next_id = max(self.items) + 1

    def add(self, data: ItemIn) -> Item:
        item = Item(id=self.next_id, **data.model_dump())
        self.items[item.id] = item
        self.next_id += 1
        return item


store = Store()


@asynccontextmanager
async def lifespan(app: FastAPI):
    store.reset()
    logger.info("items service started with %d items", len(store.items))
    yield
    logger.info("items service stopped")


class RequestContextMiddleware:
    """Pure ASGI middleware: takes the request id from ``x-request-id`` (the Rust side sets
    it) or makes one, logs the request with it, and marks responses ``x-served-by: python``."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = _header(scope, b"x-request-id") or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_marker(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-served-by", b"python")]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_marker)
        finally:
            raw_path = scope.get("raw_path")
            target = raw_path.decode("latin-1") if raw_path else scope["path"]
            if scope.get("query_string"):
                target += "?" + scope["query_string"].decode("latin-1")
            logger.info(
                'request_id=%s "%s %s" %d %.1fms',
                request_id,
                scope["method"],
                target,
                status,
                (time.perf_counter() - started) * 1000,
            )
            request_id_var.reset(token)


def _header(scope, name: bytes) -> Optional[str]:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


app = FastAPI(title="items service", lifespan=lifespan)
app.add_middleware(RequestContextMiddleware)

items = APIRouter(tags=["items"])


@items.get("/items", response_model=list[Item])
async def list_items(
    limit: int = Query(50, ge=1, le=100),
    q: Optional[str] = None,
):
    found = sorted(store.items.values(), key=lambda item: item.id)
    if q is not None:
        needle = q.lower()
        found = [item for item in found if needle in item.name.lower()]
    return found[:limit]


@items.post("/items", status_code=201, response_model=Item)
async def create_item(data: ItemIn):
    item = store.add(data)
    logger.info("request_id=%s created item %d", request_id_var.get(), item.id)
    return item


@items.get("/items/{item_id}", response_model=Item)
async def get_item(item_id: int):
    return _find(item_id)


@items.put("/items/{item_id}", response_model=Item)
async def replace_item(item_id: int, data: ItemIn):
    _find(item_id)
    item = Item(id=item_id, **data.model_dump())
    store.items[item_id] = item
    return item


@items.delete("/items/{item_id}", status_code=204)
async def delete_item(item_id: int):
    _find(item_id)
    del store.items[item_id]
    return Response(status_code=204)


def _find(item_id: int) -> Item:
    item = store.items.get(item_id)
    if item is None:
        raise HTTPException(status_code=404, detail="Item not found")
    return item


reports = APIRouter(tags=["reports"])


@reports.get("/summary")
async def summary():
    per_tag: dict[str, int] = {}
    for item in store.items.values():
        for tag in item.tags:
            per_tag[tag] = per_tag.get(tag, 0) + 1
    return {
        "count": len(store.items),
        "total_value": round(sum(item.price for item in store.items.values()), 2),
        "tags": dict(sorted(per_tag.items())),
    }


app.include_router(items)  # the original, unversioned API
app.include_router(items, prefix="/api/v1")
app.include_router(reports, prefix="/api/v1/reports")


@app.get("/health")
async def health():
    return {"status": "ok"}


@app.get("/slow")
async def slow(seconds: float = Query(1.0, ge=0, le=60)):
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@app.get("/busy")
async def busy(seconds: float = Query(1.0, ge=0, le=60)):
    """Keeps the event loop busy, as a blocking call in async code does."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        pass
    return {"busy": seconds}


ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def whoami(request: Request):
    """What this app saw: with a Rust router in front, it must equal what uvicorn shows."""
    body = await request.body()
    scope = request.scope
    return {
        "method": scope["method"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1") if scope.get("raw_path") else None,
        "query_string": scope["query_string"].decode("latin-1"),
        "root_path": scope.get("root_path", ""),
        "body": body.decode("utf-8", "replace"),
        "content_type": request.headers.get("content-type"),
        "request_id": request_id_var.get(),
        "x_request_id": request.headers.get("x-request-id"),
    }


# Left out of the OpenAPI document: one endpoint for every method would give every method
# the same operationId, and `{prefix:path}` is no OpenAPI path parameter, so the document
# would not validate (tests/python/test_migration.py validates it).
app.add_api_route("/whoami", whoami, methods=ALL_METHODS, include_in_schema=False)
app.add_api_route("/{prefix:path}/whoami", whoami, methods=ALL_METHODS, include_in_schema=False)
