"""Launches the router from Python: `python app.py 127.0.0.1:8000`.

`/rust` is answered by Rust; every other path by `app` below, an ordinary ASGI app object.
"""

import sys

import maturin_router


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[1]  # startup, shutdown
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    body = f"hello from Python: {scope['path']}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    maturin_router.serve(app, sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8000")
