"""A small but realistic FastAPI app for the end-to-end tests.

- ``GET /``                    JSON greeting
- ``GET /items/{item_id}``     int path parameter, optional ``q``; 404 for ids >= 1000
- ``POST /items``              pydantic model body; 201 with the stored item; 422 when invalid
- ``GET /stream?count=N``      ``StreamingResponse`` of NDJSON lines
- ``POST /tasks?token=T``      answers 202, a ``BackgroundTasks`` task records ``T``
- ``GET /tasks``               the recorded tokens
- ``GET /headers``             a header read through ``Header()``
- ``GET /sync-sleep?seconds=S``  a plain ``def`` endpoint (FastAPI runs it in its thread pool)
                               that sleeps, then names the thread it ran on
"""

import asyncio
import json
import threading
import time
from typing import Optional

from fastapi import BackgroundTasks, FastAPI, Header, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

app = FastAPI(title="rust-asgi-server test app")

_items = {}
_task_log = []


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@app.get("/")
async def root():
    return {"app": "fastapi", "hello": "world"}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: Optional[str] = None):
    if item_id >= 1000:
        raise HTTPException(status_code=404, detail="Item not found")
    return {"item_id": item_id, "q": q}


@app.post("/items", status_code=201)
async def create_item(item: Item):
    item_id = len(_items) + 1
    _items[item_id] = item
    return {"id": item_id, **item.model_dump()}


@app.get("/stream")
async def stream(count: int = 3):
    async def generate():
        for number in range(count):
            yield json.dumps({"n": number}) + "\n"
            await asyncio.sleep(0)

    return StreamingResponse(generate(), media_type="application/x-ndjson")


def _record_task(token: str):
    _task_log.append(token)


@app.post("/tasks", status_code=202)
async def add_task(token: str, background_tasks: BackgroundTasks):
    background_tasks.add_task(_record_task, token)
    return {"accepted": token}


@app.get("/tasks")
async def list_tasks():
    return _task_log


@app.get("/headers")
async def headers(x_request_id: Optional[str] = Header(default=None)):
    return {"x_request_id": x_request_id}


@app.get("/sync-sleep")
def sync_sleep(seconds: float = 0.5):
    time.sleep(seconds)
    return {"thread": threading.current_thread().name}
