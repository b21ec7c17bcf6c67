"""The app of the operations tests (tests/python/test_operations.py), raw ASGI 3.

- ``/block?seconds=S``: blocks the event loop with ``time.sleep`` (the mistake the
  blocked-loop watchdog finds), then answers.
- ``/sleep?seconds=S``: waits without blocking, then answers (a request in flight).
- ``/seen``: the paths this app was asked for, as JSON (the health path and static files
  never reach it).
- ``/tls``: the scope's ``tls`` extension as JSON, ``null`` when there is none; a
  websocket on ``/tls`` gets the same as its one message.
- anything else: ``ok``; a websocket on any other path echoes what it receives.

Every response carries ``x-app: operations`` (for the access-log format's response header).
"""

import asyncio
import json
import time
from urllib.parse import parse_qs

from pyapp.plain_lifespan import serve_lifespan

SEEN: list[str] = []


def blocking_call(seconds: float) -> None:
    time.sleep(seconds)  # the blocking call in async code


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await serve_lifespan(receive, send)
    if scope["type"] == "websocket":
        if scope["path"] != "/tls":
            return await echo(receive, send)
        # Accepts, sends the scope's tls extension as JSON, closes.
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(scope["extensions"].get("tls"))})
        await send({"type": "websocket.close"})
        return
    path = scope["path"]
    SEEN.append(path)
    seconds = float(parse_qs(scope["query_string"].decode()).get("seconds", ["1"])[0])
    if path == "/block":
        blocking_call(seconds)
    elif path == "/sleep":
        await asyncio.sleep(seconds)
    if path == "/seen":
        body = json.dumps(SEEN).encode()
    elif path == "/tls":
        body = json.dumps(scope["extensions"].get("tls")).encode()
    else:
        body = b"ok"
    headers = [(b"content-type", b"text/plain"), (b"x-app", b"operations")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def echo(receive, send):
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
