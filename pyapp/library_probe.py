"""A raw ASGI app for the Rust integration tests (tests/*.rs): it answers every request
with what it saw, as JSON, and records lifespan startup in the shared state."""

import json


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["started"] = True
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    seen = {
        "method": scope["method"],
        "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"),
        "query_string": scope["query_string"].decode("latin-1"),
        "root_path": scope["root_path"],
        "started": scope["state"].get("started", False),
        "body": body.decode("latin-1"),
    }
    payload = json.dumps(seen, sort_keys=True).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"x-answered-by", b"python")],
        }
    )
    await send({"type": "http.response.body", "body": payload})
