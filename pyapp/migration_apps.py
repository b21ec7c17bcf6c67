"""Apps for the migration tools' tests (tests/python/test_migration.py).

- ``drifted``: the items service some weeks after ``GET /items/{item_id}`` moved to Rust
  (examples/openapi_merge.rs): its Python definition changed since (the id became a string,
  items gained a ``sku``) and no longer matches the Rust one, which the merged OpenAPI
  document must report.
"""

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


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
