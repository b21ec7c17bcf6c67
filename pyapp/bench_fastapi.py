"""FastAPI app for the benchmark (bench/run.py): GET /items/{item_id} answers JSON,
exercising path-parameter parsing, validation and JSON serialisation."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/items/{item_id}")
async def read_item(item_id: int):
    return {"item_id": item_id, "name": "widget"}
