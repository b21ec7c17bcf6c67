"""Raw ASGI 3 apps used by the benchmark (bench/run.py): no framework, so the numbers
measure the server and its bridge to Python rather than a framework's routing.

- ``echo``:   POST, answers with the request body (the benchmark posts ``hello``).
- ``hello``:  GET, answers ``Hello, world!`` as text/plain.
- ``stream``: GET, answers 1 MiB streamed in 64 KiB chunks (``more_body=True``).
- ``large_download`` / ``large_upload``: 1 GiB (``?size=``) down in 64 KiB chunks, or up and
  counted (bench/large_bodies.py).
"""

from pyapp.plain_lifespan import serve_lifespan

HELLO_BODY = b"Hello, world!"
TEXT_HEADERS = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", str(len(HELLO_BODY)).encode()),
]

CHUNK = b"x" * (64 * 1024)
CHUNKS = 16  # 16 x 64 KiB = 1 MiB
STREAM_HEADERS = [
    (b"content-type", b"application/octet-stream"),
    (b"content-length", str(len(CHUNK) * CHUNKS).encode()),
]


async def hello(scope, receive, send):
    if scope["type"] == "lifespan":
        return await serve_lifespan(receive, send)
    await send({"type": "http.response.start", "status": 200, "headers": TEXT_HEADERS})
    await send({"type": "http.response.body", "body": HELLO_BODY})


async def echo(scope, receive, send):
    if scope["type"] == "lifespan":
        return await serve_lifespan(receive, send)
    parts = []
    more_body = True
    while more_body:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        parts.append(message.get("body", b""))
        more_body = message.get("more_body", False)
    body = b"".join(parts)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def stream(scope, receive, send):
    if scope["type"] == "lifespan":
        return await serve_lifespan(receive, send)
    await send({"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS})
    for _ in range(CHUNKS):
        await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


# Large bodies (bench/large_bodies.py): sizes come from the query string, so one app serves
# every run; 64 KiB is the chunk size Starlette's file and streaming responses use.
LARGE_CHUNK = b"x" * (64 * 1024)


def _size(scope) -> int:
    for pair in scope.get("query_string", b"").split(b"&"):
        name, _, value = pair.partition(b"=")
        if name == b"size":
            return int(value)
    return 1024 * 1024 * 1024


async def large_download(scope, receive, send):
    """GET ?size=N: N bytes (rounded down to whole 64 KiB chunks) streamed with more_body."""
    if scope["type"] == "lifespan":
        return await serve_lifespan(receive, send)
    chunks = _size(scope) // len(LARGE_CHUNK)
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", str(chunks * len(LARGE_CHUNK)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for _ in range(chunks):
        await send({"type": "http.response.body", "body": LARGE_CHUNK, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def large_upload(scope, receive, send):
    """POST: reads the whole body as it streams in, keeping none of it; answers its length."""
    if scope["type"] == "lifespan":
        return await serve_lifespan(receive, send)
    received = 0
    more_body = True
    while more_body:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        received += len(message.get("body", b""))
        more_body = message.get("more_body", False)
    body = str(received).encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
