"""A raw ASGI 3 app whose requests wait on sockets, as a database driver's do (bench/run.py's
``app-io`` cell, issue #17): each request takes a connection from a pool and makes
``ROUND_TRIPS`` small request/answer round trips on it before answering.

The "database" answers on the same asyncio loop, at the other end of a Unix socket pair, so
the benchmark needs no other process and every round trip goes twice through the loop's
selector: it measures the loop's own socket I/O (uvloop's, or asyncio's under
``--runtime-mode single``), which is what the app gives up or keeps.
"""

import asyncio
import socket

from pyapp.plain_lifespan import serve_lifespan

ROUND_TRIPS = 10
QUERY = b"SELECT 1\n"
BODY = str(ROUND_TRIPS).encode()
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]

_idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
# The database's side of each connection; referenced so asyncio does not collect it.
_answering: set[asyncio.Task] = set()


async def _answer_queries(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while line := await reader.readline():
        writer.write(line)


async def _connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    client, server = socket.socketpair()
    answering = await asyncio.open_connection(sock=server)
    _answering.add(asyncio.get_running_loop().create_task(_answer_queries(*answering)))
    return await asyncio.open_connection(sock=client)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await serve_lifespan(receive, send)
    connection = _idle.pop() if _idle else await _connect()
    reader, writer = connection
    for _ in range(ROUND_TRIPS):
        writer.write(QUERY)
        await reader.readline()
    _idle.append(connection)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
