"""The app of the operations tests (tests/python/test_operations.py), raw ASGI 3.

- ``/block?seconds=S``: blocks the event loop with ``time.sleep`` (the mistake the
  blocked-loop watchdog finds), then answers.
- ``/sleep?seconds=S``: waits without blocking, then answers (a request in flight).
- ``/seen``: the paths this app was asked for, as JSON (the health path never reaches it).
- anything else: ``ok``; a websocket on any path echoes what it receives.
"""

import asyncio
import json
import time
from urllib.parse import parse_qs

SEEN: list[str] = []


def blocking_call(seconds: float) -> None:
    time.sleep(seconds)  # the blocking call in async code


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        return await echo(receive, send)
    path = scope["path"]
    SEEN.append(path)
    seconds = float(parse_qs(scope["query_string"].decode()).get("seconds", ["1"])[0])
    if path == "/block":
        blocking_call(seconds)
    elif path == "/sleep":
        await asyncio.sleep(seconds)
    body = json.dumps(SEEN).encode() if path == "/seen" else b"ok"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


async def echo(receive, send):
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
