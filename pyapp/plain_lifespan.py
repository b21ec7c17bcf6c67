"""The lifespan protocol of a raw ASGI app with nothing to start or stop: the test and
benchmark apps of this package answer it with this one loop."""


async def serve_lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
