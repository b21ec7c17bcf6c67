"""The app of the worker-recycling tests (tests/python/test_recycling.py), raw ASGI 3.

- ``/pid``: the id of the process serving the request, as text (one per worker).
- ``/grow?mib=N``: keeps N MiB more in this process, written so that it is resident
  (``--workers-max-rss``); answers the pid.

Lifespan startup takes ``STARTUP_SECONDS`` (default 0.5): a replacement worker is not ready
at once, so requests arriving meanwhile must be served by the worker it replaces. It fails
while the file named by ``FAIL_STARTUP_IF`` exists (a bad deploy), and never ends while the
file named by ``HANG_STARTUP_IF`` exists (a database that does not answer).
"""

import asyncio
import os
from urllib.parse import parse_qs

STARTUP_SECONDS = float(os.environ.get("STARTUP_SECONDS", "0.5"))
HELD: list[bytearray] = []


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    if scope["path"] == "/grow":
        mib = int(parse_qs(scope["query_string"].decode()).get("mib", ["1"])[0])
        # Repeating a non-zero byte writes every page, unlike bytearray(n).
        HELD.append(bytearray(b"\x01") * (mib << 20))
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await asyncio.sleep(STARTUP_SECONDS)
            while os.path.exists(os.environ.get("HANG_STARTUP_IF", "")):
                await asyncio.sleep(0.1)
            if os.path.exists(os.environ.get("FAIL_STARTUP_IF", "")):
                await send({"type": "lifespan.startup.failed", "message": "bad deploy"})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
