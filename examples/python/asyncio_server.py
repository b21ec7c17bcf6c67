"""An asyncio program that serves an ASGI app next to its own tasks (issue #13).

`rust_asgi_server.Server` is awaited on the program's running loop: the app and its
lifespan run on that loop, on this thread; the sockets and HTTP are handled by the server's
Tokio threads. No signal handler is installed. Run it with the wheel installed:

    python examples/python/asyncio_server.py

It serves one request to itself while a ticker task of its own keeps running, shuts the
server down and prints what it saw as JSON. tests/python/test_wheel.py runs it, and CI
type-checks it with `mypy --strict`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import urllib.request
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from rust_asgi_server import ClientDisconnected, Server

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

lifespan_events: list[str] = []
app_threads: set[int] = set()
ticks = 0


async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    app_threads.add(threading.get_ident())
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                lifespan_events.append("startup")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                lifespan_events.append("shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = json.dumps({"path": scope["path"], "ticks": ticks}).encode()
    try:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
    except ClientDisconnected:
        pass


async def ticker() -> None:
    global ticks
    while True:
        ticks += 1
        await asyncio.sleep(0.01)


def caught_signals() -> int:
    """The standard signals (1 to 31) this process has handlers for, as the kernel sees
    them; the real-time ones above are glibc's own, set up as threads start."""
    with open("/proc/self/status") as status:
        mask = next(line for line in status if line.startswith("SigCgt:")).split()[1]
    return int(mask, 16) & 0x7FFF_FFFF


def fetch(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        answer: dict[str, Any] = json.load(response)
        return answer


async def main() -> dict[str, Any]:
    handlers_before = caught_signals()
    server = Server(app, bind="127.0.0.1:0", lifespan="on", access_log=False)
    serving = asyncio.create_task(server.serve())
    ticking = asyncio.create_task(ticker())
    [(host, port)] = await server.started
    first = await asyncio.to_thread(fetch, f"http://{host}:{port}/first")
    await asyncio.sleep(0.2)
    second = await asyncio.to_thread(fetch, f"http://{host}:{port}/second")
    handlers_while_serving = caught_signals()
    server.shutdown()
    await serving
    ticking.cancel()
    return {
        "answers": [first, second],
        "lifespan": lifespan_events,
        "app_on_this_thread": app_threads == {threading.get_ident()},
        "signal_handlers_unchanged": handlers_before == handlers_while_serving,
        "sigterm_is_default": signal.getsignal(signal.SIGTERM) is signal.SIG_DFL,
        "ticks": ticks,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
