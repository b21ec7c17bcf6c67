"""Apps for the migration tools' tests (tests/python/test_migration.py).

- ``drifted``: the items service some weeks after ``GET /items/{item_id}`` moved to Rust
  (examples/openapi_merge.rs): its Python definition changed since (the id became a string,
  items gained a ``sku``) and no longer matches the Rust one, which the merged OpenAPI
  document must report.
- ``calls_rust``: a Python endpoint that calls the Rust implementation of its pricing
  (``rust_pricing.total_price``, registered by examples/rust_from_python.rs before this
  module is imported), keeping its Python implementation for where no Rust module is
  registered (under uvicorn).
- ``reads_context``: a Python endpoint reading the user a Rust middleware authenticated
  (examples/request_context.rs passes it in ``scope["state"]``) and leaving an audit record
  there, which the middleware reads back from the response.
"""

from fastapi import FastAPI, HTTPException, Query, Request
from pydantic import BaseModel

from pyapp.service import SEED_ITEMS

try:
    from rust_pricing import total_price
except ImportError:

    def total_price(unit_price: float, quantity: int, tax_rate: float) -> float:
        """The Python implementation, until the Rust one is registered."""
        return round(unit_price * quantity * (1 + tax_rate), 2)


class Item(BaseModel):
    id: int
    name: str
    price: float
    tags: list[str]
    sku: str


drifted = FastAPI(title="items service (drifted)")


@drifted.get("/items/{item_id}", response_model=Item, tags=["items"])
async def get_item(item_id: str):
    raise HTTPException(status_code=404, detail="Item not found")


calls_rust = FastAPI(title="items service (pricing in Rust)")

TAX_RATE = 0.2


@calls_rust.get("/items/{item_id}/total", tags=["items"])
async def item_total(item_id: int, quantity: int = Query(1, ge=1)):
    item = next((item for item in SEED_ITEMS if item["id"] == item_id), None)
    if item is None:
        raise HTTPException(status_code=404, detail="Item not found")
    return {
        "item_id": item_id,
        "quantity": quantity,
        "total": total_price(item["price"], quantity, TAX_RATE),
        # `rust_pricing` when the Rust function answered, this module otherwise.
        "computed_by": total_price.__module__,
    }


reads_context = FastAPI(title="items service (authenticated in Rust)")


@reads_context.get("/me")
async def me(request: Request):
    """Who the Rust middleware says is calling (examples/request_context.rs)."""
    user = getattr(request.state, "user", None)
    if user is None:
        raise HTTPException(status_code=401, detail="not authenticated")
    request.state.audit = {"action": "profile.read", "user_id": user["id"]}  # read back by Rust
    return {"user": user, "request_id": request.state.request_id, "is_admin": "admin" in user["roles"]}
