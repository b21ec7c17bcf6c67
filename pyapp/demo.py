"""A small dependency-free ASGI 3 app: what the README serves.

    rust-asgi-server --app pyapp.demo:app --bind 127.0.0.1:8000

- ``GET /``       an HTML hello page
- ``GET /json``   ``{"message": "Hello, world!", ...}``
- ``POST /echo``  the request body back, with the request's content type
"""

import json
import platform

from pyapp.plain_lifespan import serve_lifespan

PAGE = b"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>rust-asgi-server</title></head>
<body>
<h1>Hello, world!</h1>
<p>This page is served by a Python ASGI app running inside rust-asgi-server.</p>
<ul>
<li><a href="/json">/json</a>: the same greeting as JSON</li>
<li><code>curl -d hello http://HOST/echo</code>: echoes the request body</li>
</ul>
</body>
</html>
"""


async def _send(send, status, body, content_type):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive):
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await serve_lifespan(receive, send)
    if scope["type"] != "http":
        return None
    path, method = scope["path"], scope["method"]
    if path == "/" and method in ("GET", "HEAD"):
        await _send(send, 200, PAGE, b"text/html; charset=utf-8")
    elif path == "/json" and method in ("GET", "HEAD"):
        data = {"message": "Hello, world!", "python": platform.python_version()}
        await _send(send, 200, json.dumps(data).encode(), b"application/json")
    elif path == "/echo" and method == "POST":
        body = await _read_body(receive)
        if body is None:
            return None
        content_type = dict(scope["headers"]).get(b"content-type", b"application/octet-stream")
        await _send(send, 200, body, content_type)
    elif path in ("/", "/json", "/echo"):
        await _send(send, 405, b"method not allowed\n", b"text/plain; charset=utf-8")
    else:
        await _send(send, 404, b"not found\n", b"text/plain; charset=utf-8")
